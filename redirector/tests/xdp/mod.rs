//! Helpers for the XDP program tests: a throw-away network namespace whose
//! FIB and neighbour table the program's lookups see, a frame builder and
//! checker, and the loaded program with its maps.

pub mod frame;
pub mod frame6;
pub mod netns;
pub mod program;
