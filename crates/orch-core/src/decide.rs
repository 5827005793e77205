//! The transition function.
