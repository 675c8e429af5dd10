#pragma once

// The agent's state directory:
//   <state>/                      root-owned 0700, a private mount (pins need that)
//   <state>/envs/<name>/record.textpb   the environment record, written atomically
//   <state>/envs/<name>/record.textpb.tmp  a record being written (staged), until renamed
//   <state>/envs/<name>/mnt             the pinned mount namespace (an nsfs bind mount)
//   <state>/envs/<name>/home/           the environment user's home
//   <state>/staging/              empty: each init mounts the tmpfs it builds its root on here,
//                                 in its own mount namespace only
//   <state>/view/                 the state directory once more, bound without what is mounted
//                                 in it: homes are cloned from here (see HomeCloneSource)
// An environment exists exactly when its record exists: create renames the record into place
// last, delete removes it first, and the agent's start removes directories without one (and
// staged records left in directories with one).

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "llima/internal/agent_internal.pb.h"

namespace llima {

class EnvironmentStore {
 public:
  explicit EnvironmentStore(std::string state_dir);

  // Creates the directories, makes the state directory a private mount and binds the view.
  absl::Status Initialize();

  const std::string& state_dir() const { return state_dir_; }
  std::string EnvironmentDir(const std::string& name) const;
  std::string RecordPath(const std::string& name) const;
  std::string PinPath(const std::string& name) const;
  std::string HomePath(const std::string& name) const;
  // Where every environment's init builds its root (a mount in the init's namespace only).
  std::string StagingPath() const;
  // The home as seen through <state>/view, a mount with nothing mounted on it. Cloning the
  // home's mount tree walks every mount on the mount it is on: from the state directory's own
  // mount that is one pin per environment (6.8% of the agent's samples at 1000 environments),
  // from the view none.
  std::string HomeCloneSource(const std::string& name) const;

  // Names of all environment directories, with or without a record.
  absl::StatusOr<std::vector<std::string>> ListEnvironmentDirectories() const;

  // Creates an environment's directory with its home (owned by uid:gid) and pin file.
  absl::Status CreateEnvironmentDirectory(const std::string& name, uid_t uid, gid_t gid) const;

  absl::StatusOr<internal::EnvironmentRecord> ReadRecord(const std::string& name) const;
  // temp file, fsync, rename, fsync of the directory: a crash leaves the old or the new record.
  absl::Status WriteRecord(const internal::EnvironmentRecord& record) const;
  // WriteRecord in two steps, so that the slow first (the temp file and its fsync) can run while
  // something else is under way: the record is replaced only by CommitStagedRecord, which renames
  // the staged file into place (or removes it if that fails). A staged record is not a record:
  // the old one, or none, stays until the commit.
  absl::Status StageRecord(const internal::EnvironmentRecord& record) const;
  absl::Status CommitStagedRecord(const std::string& name) const;
  // Removes a staged record that will not be committed. Missing is fine.
  void DiscardStagedRecord(const std::string& name) const;
  absl::Status RemoveRecord(const std::string& name) const;

  // Removes the environment's directory and everything in it without following symlinks or
  // crossing mount points. The pin must be unmounted first.
  absl::Status RemoveEnvironmentDirectory(const std::string& name) const;

 private:
  std::string ViewPath() const;
  std::string StagedRecordPath(const std::string& name) const;

  std::string state_dir_;
  std::string envs_dir_;
};

// Removes `name` in `parent_fd` recursively, never following symlinks and refusing to descend
// into another filesystem.
absl::Status RemoveTreeAt(int parent_fd, const std::string& name, const std::string& display);

}  // namespace llima
