//! The redirector's user space: loads the XDP program, keeps its maps in step
//! with the workspace, collects garbage flows and reports counters.

pub mod program;
