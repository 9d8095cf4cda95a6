//! Which conditions hold.
