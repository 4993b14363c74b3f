//! The storage format version.

/// The storage format version this build writes and reads (see the layout in [`super`]).
pub const FORMAT_VERSION: u32 = 9;
