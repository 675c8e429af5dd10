#pragma once

#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace llima {

// A status for a failed system call: "<what>: <strerror> (<ERRNO NAME>)", with a code that fits
// the errno (ENOENT -> NOT_FOUND, EACCES/EPERM -> PERMISSION_DENIED, ...).
absl::Status PosixError(int error_number, absl::string_view what);

// The symbolic name of an errno value ("EPERM"), or its number as text.
absl::string_view ErrnoName(int error_number);

}  // namespace llima
