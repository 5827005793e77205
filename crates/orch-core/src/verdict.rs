//! The agent's machine verdict (DESIGN §6), parsed strictly: an agent's output is
//! untrusted input, so every way it can be wrong gets a reason a human can act on.
