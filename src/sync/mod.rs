//! Green-aware synchronisation primitives with std's API.
