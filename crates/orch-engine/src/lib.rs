//! orch engine.
