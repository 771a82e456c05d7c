// swift-tools-version:6.0
import PackageDescription

// Dependencies point one way: mvc → EditVCS → DeltaStore / Apply → C modules.
// Each C module is imported by exactly one Swift target.
let package = Package(
  name: "mvc",
  products: [
    .executable(name: "mvc", targets: ["mvc"]),
    .executable(name: "mvc-demo-editor", targets: ["DemoEditor"]),
    .library(name: "EditVCS", targets: ["EditVCS"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
  ],
  targets: [
    .systemLibrary(name: "CGit2", pkgConfig: "libgit2", providers: [.apt(["libgit2-dev"])]),
    .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
    // zlib only frames large blobs as stored (uncompressed) deflate blocks: see StoredBlobWriter.
    .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
    // OpenSSL's SHA-1 only: the trailers of the packs mvc writes itself (see PackWriter).
    .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
    .systemLibrary(name: "CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),
    .systemLibrary(
      name: "CBLAS", pkgConfig: "openblas",
      providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
    // glibc's malloc.h (mallopt), which Swift's Glibc module leaves out; only the mvc executable tunes malloc.
    .systemLibrary(name: "CMalloc"),
    .target(name: "DeltaStore", dependencies: ["CZstd", "CXXHash", "CKernels"]),
    // AVX2 kernels for the canonical rule, the refinement and the rounding intervals, used when the
    // CPU has them (same bytes).
    .target(name: "CKernels"),
    .target(name: "Apply", dependencies: ["CBLAS", "CKernels"]),
    .target(name: "EditVCS", dependencies: ["DeltaStore", "Apply", "CGit2", "CZlib", "CCrypto"]),
    .executableTarget(
      name: "mvc",
      dependencies: [
        "EditVCS", "DeltaStore", "Apply", "CMalloc",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    // A stand-in for an external editor (EasyEdit, the ROME code): generates models and
    // rewrites them with closed-form edits, so the demo and benchmarks drive mvc as users do.
    .executableTarget(
      name: "DemoEditor",
      dependencies: [
        "Apply", "DeltaStore", .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    .target(name: "TestSupport", dependencies: ["Apply"], path: "Tests/TestSupport"),
    .testTarget(name: "DeltaStoreTests", dependencies: ["DeltaStore", "TestSupport"]),
    .testTarget(name: "ApplyTests", dependencies: ["Apply", "TestSupport"]),
    .testTarget(name: "EditVCSTests", dependencies: ["EditVCS", "DeltaStore", "Apply", "TestSupport"]),
    .testTarget(name: "MVCEndToEndTests", dependencies: ["mvc", "DemoEditor", "EditVCS", "DeltaStore", "TestSupport"]),
  ],
  swiftLanguageModes: [.v6]
)
