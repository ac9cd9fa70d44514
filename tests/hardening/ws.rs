//! The findings on the Soniox-compatible WebSocket endpoint.
