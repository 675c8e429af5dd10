// The agent's on-disk state, in a temporary directory. Initialize() is not called: it mounts,
// which needs root; the store's file operations do not.

#include "environment_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "unique_fd.h"

namespace llima {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr char kName[] = "cool-app-5c6c";

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::trunc);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> ListDirectory(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return names;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(dir);
  return names;
}

internal::EnvironmentRecord SampleRecord(const std::string& name = kName) {
  internal::EnvironmentRecord record;
  record.set_name(name);
  record.set_project_path("/Users/alice/My Projects/cool-app");
  record.set_uid(501);
  record.set_gid(20);
  record.set_shell("/bin/bash");
  record.mutable_created_at()->set_seconds(1700000000);
  record.mutable_created_at()->set_nanos(123);
  record.set_init_pid(4242);
  record.set_init_start_time(987654321);
  return record;
}

// A scratch directory per test, removed (with plain POSIX calls, not the code under test)
// afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/llima-unit-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) RemoveAll(dir_);
  }

  static void RemoveAll(const std::string& path) {
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
      chmod(path.c_str(), 0700);
      for (const std::string& child : ListDirectory(path)) RemoveAll(path + "/" + child);
      rmdir(path.c_str());
    } else {
      unlink(path.c_str());
    }
  }

  std::string dir_;
};

class EnvironmentStoreTest : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    state_ = dir_ + "/state";
    ASSERT_EQ(mkdir(state_.c_str(), 0700), 0);
    ASSERT_EQ(mkdir((state_ + "/envs").c_str(), 0700), 0);
    store_.emplace(state_);
  }

  // The environment directory WriteRecord writes into.
  void MakeEnvironmentDirectory(const std::string& name = kName) {
    ASSERT_EQ(mkdir(store_->EnvironmentDir(name).c_str(), 0700), 0);
  }

  std::string state_;
  std::optional<EnvironmentStore> store_;
};

TEST_F(EnvironmentStoreTest, LaysOutEnvironmentsUnderTheStateDirectory) {
  EXPECT_EQ(store_->EnvironmentDir(kName), state_ + "/envs/" + kName);
  EXPECT_EQ(store_->RecordPath(kName), state_ + "/envs/" + kName + "/record.textpb");
  EXPECT_EQ(store_->PinPath(kName), state_ + "/envs/" + kName + "/mnt");
  EXPECT_EQ(store_->HomePath(kName), state_ + "/envs/" + kName + "/home");
  EXPECT_EQ(store_->StagingPath(), state_ + "/staging");
}

TEST_F(EnvironmentStoreTest, StateDirectoryIsCleaned) {
  EnvironmentStore store(state_ + "//./");
  EXPECT_EQ(store.state_dir(), state_);
  EXPECT_EQ(store.RecordPath(kName), state_ + "/envs/" + kName + "/record.textpb");
}

TEST_F(EnvironmentStoreTest, WrittenRecordReadsBackUnchanged) {
  MakeEnvironmentDirectory();
  internal::EnvironmentRecord record = SampleRecord();
  ASSERT_TRUE(store_->WriteRecord(record).ok());

  absl::StatusOr<internal::EnvironmentRecord> read = store_->ReadRecord(kName);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*read, record))
      << read->DebugString() << "\nvs\n"
      << record.DebugString();
}

TEST_F(EnvironmentStoreTest, RewritingARecordReplacesIt) {
  MakeEnvironmentDirectory();
  internal::EnvironmentRecord record = SampleRecord();
  ASSERT_TRUE(store_->WriteRecord(record).ok());
  record.set_init_pid(777);
  ASSERT_TRUE(store_->WriteRecord(record).ok());
  absl::StatusOr<internal::EnvironmentRecord> read = store_->ReadRecord(kName);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->init_pid(), 777);
}

TEST_F(EnvironmentStoreTest, WriteRecordLeavesNoTemporaryFileBehind) {
  MakeEnvironmentDirectory();
  ASSERT_TRUE(store_->WriteRecord(SampleRecord()).ok());
  ASSERT_TRUE(store_->WriteRecord(SampleRecord()).ok());
  EXPECT_THAT(ListDirectory(store_->EnvironmentDir(kName)), UnorderedElementsAre("record.textpb"));
}

TEST_F(EnvironmentStoreTest, RecordIsNotReadableByOthers) {
  MakeEnvironmentDirectory();
  ASSERT_TRUE(store_->WriteRecord(SampleRecord()).ok());
  struct stat st;
  ASSERT_EQ(stat(store_->RecordPath(kName).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 077, 0u);
}

TEST_F(EnvironmentStoreTest, WriteRecordWithoutEnvironmentDirectoryFails) {
  absl::Status status = store_->WriteRecord(SampleRecord());
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(kName));
}

TEST_F(EnvironmentStoreTest, AStagedRecordReplacesTheRecordOnlyWhenCommitted) {
  MakeEnvironmentDirectory();
  // Before any record: a staged one is not a record yet.
  ASSERT_TRUE(store_->StageRecord(SampleRecord()).ok());
  EXPECT_EQ(store_->ReadRecord(kName).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store_->CommitStagedRecord(kName).ok());
  ASSERT_TRUE(store_->ReadRecord(kName).ok());

  internal::EnvironmentRecord changed = SampleRecord();
  changed.set_init_pid(4321);
  ASSERT_TRUE(store_->StageRecord(changed).ok());
  EXPECT_NE(store_->ReadRecord(kName)->init_pid(), 4321) << "the old record stays until commit";
  ASSERT_TRUE(store_->CommitStagedRecord(kName).ok());
  EXPECT_EQ(store_->ReadRecord(kName)->init_pid(), 4321);
  EXPECT_THAT(ListDirectory(store_->EnvironmentDir(kName)), UnorderedElementsAre("record.textpb"));
}

TEST_F(EnvironmentStoreTest, ADiscardedStagedRecordLeavesTheOldOne) {
  MakeEnvironmentDirectory();
  ASSERT_TRUE(store_->WriteRecord(SampleRecord()).ok());
  internal::EnvironmentRecord changed = SampleRecord();
  changed.set_init_pid(4321);
  ASSERT_TRUE(store_->StageRecord(changed).ok());
  store_->DiscardStagedRecord(kName);
  store_->DiscardStagedRecord(kName);  // nothing staged: fine
  EXPECT_THAT(ListDirectory(store_->EnvironmentDir(kName)), UnorderedElementsAre("record.textpb"));
  EXPECT_EQ(store_->ReadRecord(kName)->init_pid(), SampleRecord().init_pid());

  // Committing with nothing staged fails, names the file and keeps the record.
  absl::Status status = store_->CommitStagedRecord(kName);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(store_->RecordPath(kName) + ".tmp"));
  EXPECT_EQ(store_->ReadRecord(kName)->init_pid(), SampleRecord().init_pid());
}

TEST_F(EnvironmentStoreTest, StagingWithoutEnvironmentDirectoryFails) {
  absl::Status status = store_->StageRecord(SampleRecord());
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(kName));
}

TEST_F(EnvironmentStoreTest, ReadingAMissingRecordIsNotFound) {
  absl::StatusOr<internal::EnvironmentRecord> read = store_->ReadRecord("absent-0000");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound) << read.status();
  EXPECT_THAT(read.status().message(), HasSubstr("absent-0000"));

  MakeEnvironmentDirectory();  // a directory without record is not an environment either
  read = store_->ReadRecord(kName);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound) << read.status();
}

TEST_F(EnvironmentStoreTest, CorruptRecordIsDataLoss) {
  MakeEnvironmentDirectory();
  WriteFile(store_->RecordPath(kName), "name: \"cool-app-5c6c\"\nthis is { not a record");
  absl::StatusOr<internal::EnvironmentRecord> read = store_->ReadRecord(kName);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_THAT(read.status().message(), HasSubstr(store_->RecordPath(kName)));
}

TEST_F(EnvironmentStoreTest, RecordNamingAnotherEnvironmentIsDataLoss) {
  MakeEnvironmentDirectory();
  MakeEnvironmentDirectory("other-1234");
  ASSERT_TRUE(store_->WriteRecord(SampleRecord("other-1234")).ok());
  ASSERT_EQ(rename(store_->RecordPath("other-1234").c_str(), store_->RecordPath(kName).c_str()), 0);
  EXPECT_EQ(store_->ReadRecord(kName).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(EnvironmentStoreTest, RemoveRecordDeletesItAndIsIdempotent) {
  MakeEnvironmentDirectory();
  ASSERT_TRUE(store_->WriteRecord(SampleRecord()).ok());
  EXPECT_TRUE(store_->RemoveRecord(kName).ok());
  EXPECT_FALSE(Exists(store_->RecordPath(kName)));
  EXPECT_TRUE(store_->RemoveRecord(kName).ok());
  EXPECT_EQ(store_->ReadRecord(kName).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EnvironmentStoreTest, ListsEnvironmentDirectoriesWithOrWithoutRecord) {
  EXPECT_THAT(store_->ListEnvironmentDirectories().value(), IsEmpty());
  MakeEnvironmentDirectory();
  MakeEnvironmentDirectory("half-created-0000");
  ASSERT_TRUE(store_->WriteRecord(SampleRecord()).ok());
  EXPECT_THAT(store_->ListEnvironmentDirectories().value(),
              UnorderedElementsAre(kName, "half-created-0000"));
}

TEST_F(EnvironmentStoreTest, CreatesAnEnvironmentDirectoryWithHomeAndPin) {
  ASSERT_TRUE(store_->CreateEnvironmentDirectory(kName, getuid(), getgid()).ok());
  struct stat st;
  ASSERT_EQ(stat(store_->HomePath(kName).c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_uid, getuid());
  ASSERT_EQ(stat(store_->PinPath(kName).c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_THAT(ListDirectory(store_->EnvironmentDir(kName)), UnorderedElementsAre("home", "mnt"));
  // Creating it again is an error, not a silent reuse.
  EXPECT_FALSE(store_->CreateEnvironmentDirectory(kName, getuid(), getgid()).ok());
}

TEST_F(EnvironmentStoreTest, RemoveEnvironmentDirectoryRemovesEverything) {
  ASSERT_TRUE(store_->CreateEnvironmentDirectory(kName, getuid(), getgid()).ok());
  ASSERT_TRUE(store_->WriteRecord(SampleRecord()).ok());
  WriteFile(store_->HomePath(kName) + "/.bashrc", "echo hi\n");
  EXPECT_TRUE(store_->RemoveEnvironmentDirectory(kName).ok());
  EXPECT_FALSE(Exists(store_->EnvironmentDir(kName)));
  EXPECT_TRUE(store_->RemoveEnvironmentDirectory(kName).ok()) << "removing twice is fine";
}

class RemoveTreeAtTest : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    dir_fd_.reset(open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(dir_fd_.valid());
  }
  UniqueFd dir_fd_;
};

TEST_F(RemoveTreeAtTest, RemovesNestedDirectoriesAndFiles) {
  ASSERT_EQ(mkdir((dir_ + "/tree").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((dir_ + "/tree/a").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((dir_ + "/tree/a/b").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((dir_ + "/tree/a/b/c").c_str(), 0700), 0);
  ASSERT_EQ(mkdir((dir_ + "/tree/empty").c_str(), 0755), 0);
  WriteFile(dir_ + "/tree/top.txt", "1");
  WriteFile(dir_ + "/tree/a/b/c/deep.txt", "2");
  ASSERT_EQ(mkfifo((dir_ + "/tree/a/fifo").c_str(), 0600), 0);

  absl::Status status = RemoveTreeAt(dir_fd_.get(), "tree", dir_ + "/tree");
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_FALSE(Exists(dir_ + "/tree"));
}

// A process inside an environment can nest directories in its home without limit; removal must
// neither recurse on the stack nor hold a descriptor per level.
TEST_F(RemoveTreeAtTest, RemovesATreeDeeperThanTheDescriptorLimit) {
  rlimit limit;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  rlimit low = {256, limit.rlim_max};
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  constexpr int kDepth = 5000;
  ASSERT_EQ(mkdir((dir_ + "/deep").c_str(), 0755), 0);
  UniqueFd fd(open((dir_ + "/deep").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  for (int i = 0; i < kDepth; ++i) {
    ASSERT_EQ(mkdirat(fd.get(), "d", 0755), 0) << "depth " << i;
    if (i % 100 == 0) WriteFile("/proc/self/fd/" + std::to_string(fd.get()) + "/f", "x");
    fd.reset(openat(fd.get(), "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
  }
  fd.reset();

  absl::Status status = RemoveTreeAt(dir_fd_.get(), "deep", dir_ + "/deep");
  setrlimit(RLIMIT_NOFILE, &limit);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_FALSE(Exists(dir_ + "/deep"));
}

TEST_F(RemoveTreeAtTest, DoesNotFollowASymlinkToADirectoryOutside) {
  ASSERT_EQ(mkdir((dir_ + "/outside").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((dir_ + "/outside/sub").c_str(), 0755), 0);
  WriteFile(dir_ + "/outside/precious.txt", "keep me");
  WriteFile(dir_ + "/outside/sub/also.txt", "keep me too");
  ASSERT_EQ(mkdir((dir_ + "/tree").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((dir_ + "/tree/inner").c_str(), 0755), 0);
  ASSERT_EQ(symlink((dir_ + "/outside").c_str(), (dir_ + "/tree/link").c_str()), 0);
  ASSERT_EQ(symlink("../../outside", (dir_ + "/tree/inner/relative-link").c_str()), 0);
  ASSERT_EQ(symlink((dir_ + "/outside/precious.txt").c_str(), (dir_ + "/tree/file-link").c_str()),
            0);

  absl::Status status = RemoveTreeAt(dir_fd_.get(), "tree", dir_ + "/tree");
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_FALSE(Exists(dir_ + "/tree"));
  EXPECT_EQ(ReadFile(dir_ + "/outside/precious.txt"), "keep me");
  EXPECT_EQ(ReadFile(dir_ + "/outside/sub/also.txt"), "keep me too");
}

TEST_F(RemoveTreeAtTest, RemovesATopLevelSymlinkNotItsTarget) {
  ASSERT_EQ(mkdir((dir_ + "/outside").c_str(), 0755), 0);
  WriteFile(dir_ + "/outside/precious.txt", "keep me");
  ASSERT_EQ(symlink((dir_ + "/outside").c_str(), (dir_ + "/link").c_str()), 0);

  absl::Status status = RemoveTreeAt(dir_fd_.get(), "link", dir_ + "/link");
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_FALSE(Exists(dir_ + "/link"));
  EXPECT_EQ(ReadFile(dir_ + "/outside/precious.txt"), "keep me");
}

TEST_F(RemoveTreeAtTest, RemovesAPlainFile) {
  WriteFile(dir_ + "/file", "x");
  EXPECT_TRUE(RemoveTreeAt(dir_fd_.get(), "file", dir_ + "/file").ok());
  EXPECT_FALSE(Exists(dir_ + "/file"));
}

TEST_F(RemoveTreeAtTest, MissingTreeIsNotAnError) {
  EXPECT_TRUE(RemoveTreeAt(dir_fd_.get(), "absent", dir_ + "/absent").ok());
}

}  // namespace
}  // namespace llima
