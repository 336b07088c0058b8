//! The edge holds: tried as an attacker would, through a real Envoy with a
//! licence server behind the gate that records every byte it receives (and
//! a stdlib WSGI one that reads headers the CGI way), nothing reaches the
//! licence server that fpgen did not seal, and every input gets its true
//! answer. Each test names the point of the threat model it proves; most
//! run twice: with the filter as the only wall (`Options::unhardened`) and
//! with the HTTP connection manager settings of every shipped configuration.

/// What the topics share.
mod support;

/// The true answer to every input.
mod answers;
/// Licence-data headers and the token parameter.
mod header_scrubbing;
/// No secret in Envoy's logs.
mod logs;
/// Paths the gate refuses, and bytes it passes.
mod paths;
/// The configurations as shipped.
mod shipped;
/// Tokens of customers who are no longer served.
mod token_lifetime;
/// Widevine's gate.
mod widevine_gate;
/// PlayReady's gate: the same rows, and a challenge held with trailers.
mod playready_gate;
