//! Loom models of usrcu's algorithms: the reader/grace-period protocol
//! (SRCU, and the Tasks Trace flavor in `tests/trace.rs`),
//! `call_srcu` + `barrier`, and the lazy attach of a static domain.
//!
//! The models live in `tests/` and only exist with `--cfg usrcu_loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg usrcu_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     CARGO_TARGET_DIR=target/loom cargo test -p usrcu-loom --release
//! ```
//!
//! Each model has a negative twin that switches off the fence or ordering
//! the model relies on (through `usrcu::fault`) and requires loom to find
//! the failure: a model that cannot fail proves nothing.
