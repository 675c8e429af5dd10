#pragma once

#include "absl/synchronization/mutex.h"

namespace llima {

// Abseil as packaged here is built without NDEBUG, which leaves absl::Mutex's deadlock
// detection on: every lock and unlock (gRPC takes several per call) also updates a global
// lock-order graph under a lock of its own. The agent turns it off first thing in main (its
// clients take no such locks); the tests keep it.
inline void SkipMutexDeadlockDetection() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

}  // namespace llima
