//! More than one host (issue 17), the edge's side: an edge reaches its
//! service through more than one URL and through gateways.
//!
//! * `failover`: `--url` given twice, the first dead or refusing: the words
//!   arrive through the second; the serving one dying mid-stream moves the
//!   session to the other, nothing lost;
//! * `queued`: a gateway's queued frames (the emulator's `queue_first`)
//!   reach the edge's output as `queued` events, keep the connection alive
//!   past the half-open watchdog, and lose no audio;
//! * `haproxy`: eight edges through a real HAProxy terminating TLS in front
//!   of two gateway daemons; one gateway SIGKILLed mid-stream.

mod failover;
mod haproxy;
mod queued;
