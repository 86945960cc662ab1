//! Loom models of usrcu's algorithms: the reader/grace-period protocol
//! (SRCU, and the Tasks Trace flavor in `tests/trace.rs`),
//! `call_srcu` + `barrier`, and the lazy attach of a static domain.
//!
//! The models live in `tests/` and only exist with `--cfg usrcu_loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg usrcu_loom" LOOM_MAX_PREEMPTIONS=3 \
//!     CARGO_TARGET_DIR=target/loom cargo test -p usrcu-loom --release
//! ```
//!
//! (`.ci/run` runs exactly this and checks that every model of
//! `tests/models.rs` passed.) Each model has at least one negative twin that
//! switches off a fence, scan or ordering the model relies on (through
//! `usrcu::fault`) and requires loom to fail with the model's own failure
//! message, not any panic:
//!
//! | model | negative twins (fault) |
//! |-------|------------------------|
//! | reader vs `synchronize` | `NoReaderFence`, `SkipSecondScan` |
//! | readers cannot cancel out | `NoHeavyFence` |
//! | polled cookie | `SkipSecondScan` |
//! | `call_srcu` + `barrier` | `NoReaderFence` |
//! | lazy attach | `RelaxedPublish` (loom's race detector fires) |
//!
//! Not every fault has a twin in every model: the `synchronize` model cannot
//! fail without the heavy fence under loom (`tests/models.rs` says why), and
//! loom found no failure of the `call_srcu` model without it either.
