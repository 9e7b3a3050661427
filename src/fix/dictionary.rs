//! The venue dictionary (being written).
