#include "posix_error.h"

#include <errno.h>
#include <string.h>

#include "absl/strings/str_cat.h"

namespace llima {

absl::string_view ErrnoName(int error_number) {
  switch (error_number) {
#define LLIMA_ERRNO(e) \
  case e:              \
    return #e;
    LLIMA_ERRNO(EPERM)
    LLIMA_ERRNO(ENOENT)
    LLIMA_ERRNO(ESRCH)
    LLIMA_ERRNO(EINTR)
    LLIMA_ERRNO(EIO)
    LLIMA_ERRNO(E2BIG)
    LLIMA_ERRNO(ENOEXEC)
    LLIMA_ERRNO(EBADF)
    LLIMA_ERRNO(ECHILD)
    LLIMA_ERRNO(EAGAIN)
    LLIMA_ERRNO(ENOMEM)
    LLIMA_ERRNO(EACCES)
    LLIMA_ERRNO(EFAULT)
    LLIMA_ERRNO(EBUSY)
    LLIMA_ERRNO(EEXIST)
    LLIMA_ERRNO(EXDEV)
    LLIMA_ERRNO(ENODEV)
    LLIMA_ERRNO(ENOTDIR)
    LLIMA_ERRNO(EISDIR)
    LLIMA_ERRNO(EINVAL)
    LLIMA_ERRNO(ENFILE)
    LLIMA_ERRNO(EMFILE)
    LLIMA_ERRNO(ENOSPC)
    LLIMA_ERRNO(EROFS)
    LLIMA_ERRNO(EPIPE)
    LLIMA_ERRNO(ENAMETOOLONG)
    LLIMA_ERRNO(ENOSYS)
    LLIMA_ERRNO(ENOTEMPTY)
    LLIMA_ERRNO(ELOOP)
    LLIMA_ERRNO(EMSGSIZE)
    LLIMA_ERRNO(ECONNREFUSED)
    LLIMA_ERRNO(ETIMEDOUT)
#undef LLIMA_ERRNO
    default:
      return "";
  }
}

absl::Status PosixError(int error_number, absl::string_view what) {
  absl::string_view name = ErrnoName(error_number);
  std::string message =
      name.empty() ? absl::StrCat(what, ": ", strerror(error_number), " (errno ", error_number, ")")
                   : absl::StrCat(what, ": ", strerror(error_number), " (", name, ")");
  switch (error_number) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(message);
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
    case ENOTDIR:
      return absl::InvalidArgumentError(message);
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
    case EAGAIN:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace llima
