import Foundation

/// Every failure DeltaStore reports: a malformed file, a failed system call, a corrupt blob.
///
/// Cases carry structured fields so callers and tests match on what failed; `errorDescription`
/// is one line in git's style and `recoverySuggestion` names the next step.
public enum DeltaStoreError: Error, LocalizedError, Equatable, Sendable {
  /// The file is shorter than the 8-byte header length field.
  case fileTooSmall(path: String, byteCount: Int)
  /// The header length field exceeds the 100 000 000 byte limit of the reference reader.
  case headerTooLarge(path: String, declaredByteCount: UInt64, limit: Int)
  /// The header length field points past the end of the file.
  case headerOutOfBounds(path: String, declaredByteCount: UInt64, fileByteCount: Int)
  /// The header is not valid UTF-8.
  case headerNotUTF8(path: String)
  /// The header is not one JSON object (optionally followed by whitespace).
  case invalidHeaderJSON(path: String, byteOffset: Int, reason: String)
  /// A key appears twice in one JSON object of the header.
  case duplicateKey(path: String, key: String)
  /// `__metadata__` is not an object mapping strings to strings.
  case invalidMetadata(path: String, reason: String)
  /// A tensor entry is not an object with `dtype`, `shape` and `data_offsets`.
  case invalidTensorEntry(path: String, tensor: String, reason: String)
  /// A tensor's dtype is not one of the specification's names.
  case unknownDType(path: String, tensor: String, dtype: String)
  /// A tensor's shape is not a list of non-negative integers.
  case invalidShape(path: String, tensor: String, reason: String)
  /// A tensor's `data_offsets` is not `[begin, end]` with `end >= begin`.
  case invalidDataOffsets(path: String, tensor: String, reason: String)
  /// Sorted by offset, a tensor does not begin where the previous one ended.
  case tensorNotContiguous(path: String, tensor: String, expectedBegin: Int, actualBegin: Int)
  /// The product of the shape and the element bits overflows.
  case tensorSizeOverflow(path: String, tensor: String)
  /// The tensor's total bit count is not a whole number of bytes.
  case tensorBitsNotByteAligned(path: String, tensor: String, bitCount: Int)
  /// The shape and dtype call for a different number of bytes than `data_offsets` gives.
  case tensorByteCountMismatch(path: String, tensor: String, expected: Int, actual: Int)
  /// The header and tensors do not account for the file size exactly.
  case fileSizeMismatch(path: String, expected: Int, actual: Int)
  /// A system call failed.
  case io(path: String, function: String, errno: Int32, message: String)
  /// A write, allocation or sync failed with `ENOSPC` or `EDQUOT`.
  case noSpace(path: String, function: String, errno: Int32)
  /// A write or allocation failed with `EFBIG` (`RLIMIT_FSIZE` or the file system's limit).
  case fileSizeLimitExceeded(path: String, function: String)
  /// A zstd function returned an error code.
  case zstd(function: String, message: String)
  /// A zstd frame declares a content size other than the expected one (`nil`: not declared).
  case zstdContentSizeMismatch(expected: Int, declared: UInt64?)
  /// A zstd frame decompressed to a different number of bytes than expected.
  case zstdOutputSizeMismatch(expected: Int, actual: Int)
  /// An encoded residual is malformed.
  case corruptResidual(reason: String)
  /// A stored blob (full tensor chunks or factor) is malformed.
  case corruptBlob(kind: String, reason: String)
  /// The operation does not support this element type.
  case unsupportedDType(dtype: DType, operation: String)
  /// Two buffers that must agree in length do not.
  case byteCountMismatch(what: String, expected: Int, actual: Int)
  /// An xxHash function failed (allocation or state error).
  case xxhash(function: String)
  /// The path names a FIFO, a device, a socket, a directory or (where links are not followed) a
  /// symbolic link, where a regular file must be.
  case notRegularFile(path: String, kind: String)
  /// The file was truncated, rewritten or replaced while it was being read.
  case fileChanged(path: String)
  /// A NumPy `.npy` file could not be opened or read.
  case npyUnreadable(path: String, reason: String)
  /// The file does not start with `\x93NUMPY`.
  case npyBadMagic(path: String)
  /// A `.npy` format version other than 1.0, 2.0 or 3.0.
  case npyUnsupportedVersion(path: String, major: Int, minor: Int)
  /// The `.npy` header length field points past the end of the file.
  case npyTruncatedHeader(path: String, declaredByteCount: Int, availableByteCount: Int)
  /// The `.npy` header is not the Python dict literal NumPy writes.
  case npyMalformedHeader(path: String, reason: String)
  /// A `.npy` dtype other than `<f4` or `<f8`.
  case npyUnsupportedDType(path: String, descr: String)
  /// `fortran_order` is `True`: the data is column-major.
  case npyFortranOrder(path: String, shape: [Int])
  /// A `.npy` shape that is not 1-D or 2-D.
  case npyUnsupportedShape(path: String, shape: [Int])
  /// The bytes after the `.npy` header are not exactly Πshape × itemsize.
  case npyDataLengthMismatch(path: String, expectedByteCount: Int, actualByteCount: Int)
  /// A `.npy` file could not be written.
  case npyUnwritable(path: String, reason: String)

  /// One line in git's style: lowercase, subject in single quotes, no trailing period.
  public var errorDescription: String? {
    switch self {
    case .fileTooSmall(let path, let n):
      return "cannot read '\(path)': file is \(n) bytes, a safetensors file has at least 8"
    case .headerTooLarge(let path, let n, let limit):
      return "cannot read '\(path)': header declares \(n) bytes, limit is \(limit)"
    case .headerOutOfBounds(let path, let n, let size):
      return "cannot read '\(path)': header declares \(n) bytes but the file has \(size)"
    case .headerNotUTF8(let path):
      return "cannot read '\(path)': header is not valid UTF-8"
    case .invalidHeaderJSON(let path, let offset, let reason):
      return "cannot read '\(path)': header is not a JSON object: \(reason) at byte \(offset)"
    case .duplicateKey(let path, let key):
      return "cannot read '\(path)': header has key '\(key)' more than once"
    case .invalidMetadata(let path, let reason):
      return "cannot read '\(path)': invalid '__metadata__': \(reason)"
    case .invalidTensorEntry(let path, let tensor, let reason):
      return "cannot read '\(path)': tensor '\(tensor)': \(reason)"
    case .unknownDType(let path, let tensor, let dtype):
      return "cannot read '\(path)': tensor '\(tensor)' has unknown dtype '\(dtype)'"
    case .invalidShape(let path, let tensor, let reason):
      return "cannot read '\(path)': tensor '\(tensor)' has an invalid shape: \(reason)"
    case .invalidDataOffsets(let path, let tensor, let reason):
      return "cannot read '\(path)': tensor '\(tensor)' has invalid data_offsets: \(reason)"
    case .tensorNotContiguous(let path, let tensor, let expected, let actual):
      return
        "cannot read '\(path)': tensor '\(tensor)' begins at \(actual), expected \(expected) (tensors must be contiguous)"
    case .tensorSizeOverflow(let path, let tensor):
      return "cannot read '\(path)': tensor '\(tensor)' size overflows"
    case .tensorBitsNotByteAligned(let path, let tensor, let bits):
      return
        "cannot read '\(path)': tensor '\(tensor)' has \(bits) bits, not a whole number of bytes"
    case .tensorByteCountMismatch(let path, let tensor, let expected, let actual):
      return
        "cannot read '\(path)': tensor '\(tensor)' needs \(expected) bytes but data_offsets span \(actual)"
    case .fileSizeMismatch(let path, let expected, let actual):
      return
        "cannot read '\(path)': header accounts for \(expected) bytes but the file has \(actual)"
    case .io(let path, let function, _, let message):
      return "cannot \(Self.verb(function)) '\(path)': \(message)"
    case .noSpace(let path, let function, let code):
      let what = code == EDQUOT ? "disk quota exceeded" : "no space left on device"
      return "cannot \(Self.verb(function)) '\(path)': \(what)"
    case .fileSizeLimitExceeded(let path, let function):
      return "cannot \(Self.verb(function)) '\(path)': file size limit exceeded"
    case .zstd(let function, let message):
      return "zstd failed in \(function): \(message)"
    case .zstdContentSizeMismatch(let expected, let declared):
      let d = declared.map { "\($0) bytes" } ?? "no size"
      return "compressed blob declares \(d), expected \(expected)"
    case .zstdOutputSizeMismatch(let expected, let actual):
      return "compressed blob decompressed to \(actual) bytes, expected \(expected)"
    case .corruptResidual(let reason):
      return "corrupt residual: \(reason)"
    case .corruptBlob(let kind, let reason):
      return "corrupt \(kind): \(reason)"
    case .unsupportedDType(let dtype, let operation):
      return "\(operation) does not support dtype '\(dtype.rawValue)'"
    case .byteCountMismatch(let what, let expected, let actual):
      return "\(what) has \(actual) bytes, expected \(expected)"
    case .xxhash(let function):
      return "xxhash failed in \(function)"
    case .notRegularFile(let path, let kind):
      return "cannot read '\(path)': is a \(kind), not a regular file"
    case .fileChanged(let path):
      return "'\(path)' changed while being read; run the command again"
    case .npyUnreadable(let path, let reason):
      return "cannot read '\(path)': \(reason)"
    case .npyBadMagic(let path):
      return "cannot read '\(path)': not a .npy file (no \\x93NUMPY magic)"
    case .npyUnsupportedVersion(let path, let major, let minor):
      return "cannot read '\(path)': .npy format version \(major).\(minor) is not supported"
    case .npyTruncatedHeader(let path, let declared, let available):
      return "cannot read '\(path)': header declares \(declared) bytes, only \(available) follow"
    case .npyMalformedHeader(let path, let reason):
      return "cannot read '\(path)': malformed .npy header: \(reason)"
    case .npyUnsupportedDType(let path, let descr):
      return "cannot read '\(path)': dtype '\(descr)' is not supported"
    case .npyFortranOrder(let path, let shape):
      return "cannot read '\(path)': array \(shape) is stored in Fortran (column-major) order"
    case .npyUnsupportedShape(let path, let shape):
      return "cannot read '\(path)': shape \(shape) is not 1-D or 2-D"
    case .npyDataLengthMismatch(let path, let expected, let actual):
      return "cannot read '\(path)': data is \(actual) bytes, the header implies \(expected)"
    case .npyUnwritable(let path, let reason):
      return "cannot write '\(path)': \(reason)"
    }
  }

  /// The next step for the user.
  public var recoverySuggestion: String? {
    switch self {
    case .fileTooSmall, .headerOutOfBounds, .fileSizeMismatch:
      // What a file looks like while an editor is still saving it, too.
      return
        "the file is truncated: if a program is still writing it, run the command again once it has finished; "
        + "otherwise 'mvc checkout --force HEAD' rewrites it from the repository"
    case .headerTooLarge, .headerNotUTF8, .invalidHeaderJSON,
      .duplicateKey, .invalidMetadata, .invalidTensorEntry, .unknownDType, .invalidShape,
      .invalidDataOffsets, .tensorNotContiguous, .tensorSizeOverflow, .tensorBitsNotByteAligned,
      .tensorByteCountMismatch:
      return
        "the file is truncated or is not safetensors; 'mvc checkout --force HEAD' rewrites it from the repository"
    case .noSpace:
      return "free some space on the device and try again; nothing was changed"
    case .fileSizeLimitExceeded:
      return "raise the file size limit ('ulimit -f') and try again; nothing was changed"
    case .io:
      return "check the path and its permissions, then try again"
    case .zstd, .zstdContentSizeMismatch, .zstdOutputSizeMismatch, .corruptResidual, .corruptBlob:
      return "the repository object is damaged; run 'mvc fsck' or fetch it again from a remote"
    case .unsupportedDType:
      return "only F64, F32, F16 and BF16 tensors can be edited"
    case .byteCountMismatch:
      return "the tensor does not match the repository; run 'mvc status' to see what changed"
    case .xxhash:
      return "the system is out of memory; try again"
    case .notRegularFile(_, let kind) where kind == "symbolic link":
      return "mvc does not follow links inside a model folder or from a repository; "
        + "replace the link with a copy of the file it points to"
    case .notRegularFile:
      return "mvc reads models only from regular files; put the model file itself at this path"
    case .fileChanged:
      return "another program is writing the file; wait until it has finished, then run the command again"
    case .npyUnreadable: return "check that the file exists and is readable"
    case .npyBadMagic, .npyMalformedHeader, .npyTruncatedHeader, .npyDataLengthMismatch:
      return "the file is truncated or is not a .npy file; re-export it with numpy.save"
    case .npyUnsupportedVersion: return "re-save it with numpy.save (format 1.0, 2.0 or 3.0)"
    case .npyUnsupportedDType:
      return "convert it first: numpy.save(path, array.astype('<f8'))"
    case .npyFortranOrder:
      return "re-save it in C order: numpy.save(path, numpy.ascontiguousarray(array))"
    case .npyUnsupportedShape: return "reshape it to 1-D or 2-D before saving"
    case .npyUnwritable: return "check the directory exists and is writable, and the disk has space"
    }
  }

  /// Maps a C function name to the verb of the message ("write", "sync", "rename").
  private static func verb(_ function: String) -> String {
    switch function {
    case "open", "openat": return "open"
    case "pwrite", "write", "posix_fallocate", "ftruncate": return "write"
    case "fsync", "fdatasync": return "sync"
    case "rename", "renameat": return "rename onto"
    case "mmap", "read", "pread", "fstat", "stat": return "read"
    case "unlink": return "remove"
    default: return function
    }
  }

  /// Builds the error for a failed system call from its errno.
  static func system(_ function: String, path: String, errno code: Int32) -> DeltaStoreError {
    switch code {
    case ENOSPC, EDQUOT: return .noSpace(path: path, function: function, errno: code)
    case EFBIG: return .fileSizeLimitExceeded(path: path, function: function)
    default:
      let message = strerror(code).map { String(cString: $0) } ?? "errno \(code)"
      return .io(path: path, function: function, errno: code, message: message.lowercased())
    }
  }
}
