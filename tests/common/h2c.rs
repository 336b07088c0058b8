//! A minimal HTTP/2 cleartext client (prior knowledge): one request with
//! trailers, which the HTTP/1.1 client cannot send to the gate.

use super::http::IO_TIMEOUT;
use std::io::{Read, Write};
use std::net::TcpStream;

fn hpack_len(out: &mut Vec<u8>, len: usize) {
    if len < 127 {
        out.push(len as u8);
    } else {
        out.push(127);
        let mut rest = len - 127;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }
}

pub fn hpack_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0x00); // literal, not indexed, new name
        hpack_len(&mut block, name.len());
        block.extend_from_slice(name.as_bytes());
        hpack_len(&mut block, value.len());
        block.extend_from_slice(value.as_bytes());
    }
    block
}

pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One h2c request on 127.0.0.1:`port`: the pseudo-headers, then
/// `headers`, the body (if any) and trailers (if any; they end the stream).
/// Returns the first byte of the response header block (0x88 is HPACK's
/// indexed `:status: 200`) and the body.
pub fn h2c(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    trailers: &[(&str, &str)],
) -> (u8, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut all = vec![
        (":method", method),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", path),
    ];
    all.extend_from_slice(headers);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, &[]));
    let ends_here = body.is_none() && trailers.is_empty();
    out.extend(h2_frame(
        1,
        0x4 | u8::from(ends_here),
        1,
        &hpack_block(&all),
    ));
    if let Some(body) = body {
        out.extend(h2_frame(0, u8::from(trailers.is_empty()), 1, body));
    }
    if !trailers.is_empty() {
        out.extend(h2_frame(1, 0x4 | 0x1, 1, &hpack_block(trailers)));
    }
    s.write_all(&out).unwrap();
    let (mut status, mut data) = (0u8, Vec::new());
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        match (kind, stream) {
            (4, 0) if flags & 1 == 0 => s.write_all(&h2_frame(4, 1, 0, &[])).unwrap(),
            (1, 1) => {
                status = payload[0];
                if flags & 1 == 1 {
                    return (status, data);
                }
            }
            (0, 1) => {
                data.extend_from_slice(&payload);
                if flags & 1 == 1 {
                    return (status, data);
                }
            }
            (3, 1) => panic!("RST_STREAM: {payload:?}"),
            (7, _) => panic!("GOAWAY: {payload:?}"),
            _ => {}
        }
    }
}
