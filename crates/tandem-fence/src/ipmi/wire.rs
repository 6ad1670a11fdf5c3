//! The bytes on the wire: RMCP, the IPMI v1.5 and v2.0 (RMCP+) session
//! wrappers, and IPMI LAN messages (IPMI v2.0 §13.6–13.8).

use super::crypto::SessionKeys;

/// RMCP header of every IPMI packet: version 6, reserved, no RMCP ack, class IPMI.
pub const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xff, 0x07];
/// Authentication type field of RMCP+ packets.
pub const AUTH_RMCP_PLUS: u8 = 0x06;

/// RMCP+ payload types.
pub mod payload {
    /// An IPMI message.
    pub const IPMI: u8 = 0x00;
    /// RMCP+ Open Session Request.
    pub const OPEN_REQUEST: u8 = 0x10;
    /// RMCP+ Open Session Response.
    pub const OPEN_RESPONSE: u8 = 0x11;
    /// RAKP message 1.
    pub const RAKP1: u8 = 0x12;
    /// RAKP message 2.
    pub const RAKP2: u8 = 0x13;
    /// RAKP message 3.
    pub const RAKP3: u8 = 0x14;
    /// RAKP message 4.
    pub const RAKP4: u8 = 0x15;
}

/// Our software id as requester (remote console, 0x81).
pub const RQ_ADDR: u8 = 0x81;
/// The BMC's slave address.
pub const BMC_ADDR: u8 = 0x20;

/// The IPMB checksum: two's complement of the byte sum.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// An IPMI LAN request message for the BMC.
pub fn lan_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![BMC_ADDR, netfn << 2];
    m.push(checksum(&m));
    let body_start = m.len();
    m.extend_from_slice(&[RQ_ADDR, (rq_seq & 0x3f) << 2, cmd]);
    m.extend_from_slice(data);
    let c = checksum(&m[body_start..]);
    m.push(c);
    m
}

/// A parsed IPMI LAN response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanResponse {
    /// The response NetFn (request NetFn + 1).
    pub netfn: u8,
    /// The request sequence number it answers.
    pub rq_seq: u8,
    /// The command.
    pub cmd: u8,
    /// The completion code.
    pub cc: u8,
    /// The data after the completion code.
    pub data: Vec<u8>,
}

/// Parses and checks an IPMI LAN response message.
pub fn parse_lan_response(m: &[u8]) -> Result<LanResponse, String> {
    if m.len() < 8 {
        return Err(format!("IPMI response of {} bytes is too short", m.len()));
    }
    if checksum(&m[..2]) != m[2] {
        return Err("IPMI response header checksum is wrong".into());
    }
    let last = m.len() - 1;
    if checksum(&m[3..last]) != m[last] {
        return Err("IPMI response data checksum is wrong".into());
    }
    Ok(LanResponse {
        netfn: m[1] >> 2,
        rq_seq: m[4] >> 2,
        cmd: m[5],
        cc: m[6],
        data: m[7..last].to_vec(),
    })
}

/// A sessionless IPMI v1.5 packet (authentication type none), used before a
/// session exists (Get Channel Authentication Capabilities).
pub fn packet_v15(message: &[u8]) -> Vec<u8> {
    let mut p = RMCP_HEADER.to_vec();
    p.push(0x00);
    p.extend_from_slice(&[0; 8]);
    p.push(message.len() as u8);
    p.extend_from_slice(message);
    p
}

/// An RMCP+ (IPMI v2.0) packet. With `keys`, the payload is encrypted
/// (AES-CBC-128 with `iv`) and the packet authenticated (integrity pad,
/// pad length, next header, AuthCode).
pub fn packet_v2(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    keys: Option<(&SessionKeys, [u8; 16])>,
) -> Vec<u8> {
    let mut p = RMCP_HEADER.to_vec();
    p.push(AUTH_RMCP_PLUS);
    let body = match keys {
        Some((k, iv)) => {
            p.push(payload_type | 0xc0);
            k.encrypt(iv, payload)
        }
        None => {
            p.push(payload_type);
            payload.to_vec()
        }
    };
    p.extend_from_slice(&session_id.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&(body.len() as u16).to_le_bytes());
    p.extend_from_slice(&body);
    if let Some((k, _)) = keys {
        // Pad so that AuthType .. Next Header is a multiple of 4 bytes.
        let covered = p.len() - 4 + 2;
        let pad = (4 - covered % 4) % 4;
        p.extend(std::iter::repeat_n(0xffu8, pad));
        p.push(pad as u8);
        p.push(0x07);
        let code = k.auth_code(&p[4..]);
        p.extend_from_slice(&code);
    }
    p
}

/// A received packet, unwrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The payload type (without the encrypted/authenticated bits), or
    /// [`payload::IPMI`] for a v1.5 packet.
    pub payload_type: u8,
    /// The session id in the header.
    pub session_id: u32,
    /// The payload, decrypted.
    pub payload: Vec<u8>,
}

/// Unwraps a received RMCP packet (v1.5 or v2.0). With `keys` (inside a
/// session) every packet must be RMCP+ and carry a valid AuthCode; an
/// encrypted one is decrypted.
pub fn parse_packet(p: &[u8], keys: Option<&SessionKeys>) -> Result<Packet, String> {
    if p.len() < 5 || p[0] != 0x06 || p[3] & 0x0f != 0x07 {
        return Err("not an RMCP/IPMI packet".into());
    }
    let auth_type = p[4] & 0x0f;
    if keys.is_some() && (auth_type != AUTH_RMCP_PLUS || p.get(5).is_none_or(|b| b & 0x40 == 0)) {
        return Err("unauthenticated packet inside an authenticated session".into());
    }
    if auth_type != AUTH_RMCP_PLUS {
        // IPMI v1.5: auth type, seq(4), session id(4), [auth code(16)], length, message.
        let mut off = 5 + 8;
        if auth_type != 0 {
            off += 16;
        }
        let len = *p.get(off).ok_or("truncated IPMI v1.5 packet")? as usize;
        let msg = p
            .get(off + 1..off + 1 + len)
            .ok_or("truncated IPMI v1.5 packet")?;
        let sid = u32::from_le_bytes([p[9], p[10], p[11], p[12]]);
        return Ok(Packet {
            payload_type: payload::IPMI,
            session_id: sid,
            payload: msg.to_vec(),
        });
    }
    if p.len() < 16 {
        return Err("truncated RMCP+ packet".into());
    }
    let encrypted = p[5] & 0x80 != 0;
    let authenticated = p[5] & 0x40 != 0;
    let payload_type = p[5] & 0x3f;
    let session_id = u32::from_le_bytes([p[6], p[7], p[8], p[9]]);
    let len = u16::from_le_bytes([p[14], p[15]]) as usize;
    let body = p.get(16..16 + len).ok_or("truncated RMCP+ payload")?;
    if authenticated {
        let k = keys.ok_or("authenticated packet outside a session")?;
        let icv = k.suite.icv_len();
        if p.len() < 16 + len + 2 + icv {
            return Err("truncated RMCP+ trailer".into());
        }
        let code_at = p.len() - icv;
        if p[code_at - 1] != 0x07 {
            return Err("bad RMCP+ next header".into());
        }
        if k.auth_code(&p[4..code_at]) != p[code_at..] {
            return Err("packet signature (AuthCode) does not verify".into());
        }
    }
    let payload = if encrypted {
        let k = keys.ok_or("encrypted packet outside a session")?;
        k.decrypt(body).ok_or("payload does not decrypt")?
    } else {
        body.to_vec()
    };
    Ok(Packet {
        payload_type,
        session_id,
        payload,
    })
}

/// RMCP+ status codes of Open Session Response and RAKP 2/4, in words.
pub fn rmcp_status(code: u8) -> &'static str {
    match code {
        0x00 => "no errors",
        0x01 => "insufficient resources to create a session (all session slots in use?)",
        0x02 => "invalid session id",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session id",
        0x09 => "invalid role",
        0x0a => "unauthorized role or privilege level requested",
        0x0b => "insufficient resources to create a session at the requested role",
        0x0c => "invalid name length",
        0x0d => "unauthorized name (unknown user)",
        0x0e => "unauthorized GUID",
        0x0f => "invalid integrity check value (wrong password?)",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "unknown RMCP+ status code",
    }
}

/// An IPMI completion code in words (decoded with ipmi-rs's table).
pub fn completion_code(cc: u8) -> String {
    use ipmi_rs::connection::CompletionErrorCode as C;
    let words = match C::try_from(cc) {
        Err(()) => "success".to_string(),
        Ok(C::NodeBusy) => "node busy".into(),
        Ok(C::InvalidCommand) => "invalid command".into(),
        Ok(C::InvalidCommandForLun) => "command invalid for this LUN".into(),
        Ok(C::ProcessingTimeout) => "timeout while processing the command".into(),
        Ok(C::OutOfSpace) => "out of space".into(),
        Ok(C::ReservationCancelledOrInvalidId) => "reservation cancelled or invalid".into(),
        Ok(C::RequestDataTruncated) => "request data truncated".into(),
        Ok(C::RequestDataLenInvalid) => "request data length invalid".into(),
        Ok(C::RequestDataLengthLimitExceeded) => "request data length limit exceeded".into(),
        Ok(C::ParameterOutOfRange) => "parameter out of range".into(),
        Ok(C::CannotReturnNumOfRequestedBytes) => "cannot return the requested bytes".into(),
        Ok(C::RequestedDatapointNotPresent) => {
            "requested sensor, data or record not present".into()
        }
        Ok(C::InvalidDataFieldInRequest) => "invalid data field in request".into(),
        Ok(C::CommandIllegalForSensorOrRecord) => {
            "command illegal for this sensor or record".into()
        }
        Ok(C::ResponseUnavailable { reason }) => format!("response unavailable ({reason:?})"),
        Ok(C::CannotExecuteDuplicateRequest) => "cannot execute duplicated request".into(),
        Ok(C::DestinationUnavailable) => "destination unavailable".into(),
        Ok(C::InsufficientPrivilege) => "insufficient privilege level".into(),
        Ok(C::CannotExecuteCommandInCurrentState) => {
            "command not supported in the present state".into()
        }
        Ok(C::SubFunctionDisabled) => "sub-function disabled or unavailable".into(),
        Ok(C::Unspecified) => "unspecified error".into(),
        Ok(C::Oem(v)) => format!("OEM completion code 0x{v:02x}"),
        Ok(C::CommandSpecific(v)) => format!("command-specific completion code 0x{v:02x}"),
        Ok(C::Reserved(v)) => format!("reserved completion code 0x{v:02x}"),
    };
    format!("{words} (completion code 0x{cc:02x})")
}

#[cfg(test)]
mod tests {
    use super::super::crypto::{SessionKeys, Suite};
    use super::*;

    #[test]
    fn lan_request_has_valid_checksums() {
        // Get Chassis Status, as ipmitool sends it.
        let m = lan_request(0x00, 0x01, 1, &[]);
        assert_eq!(m, vec![0x20, 0x00, 0xe0, 0x81, 0x04, 0x01, 0x7a]);
    }

    #[test]
    fn lan_response_checks_both_checksums() {
        let mut r = vec![RQ_ADDR, 0x01 << 2];
        r.push(checksum(&r));
        let mut body = vec![BMC_ADDR, 5 << 2, 0x01, 0x00, 0x01, 0x00, 0x00];
        body.push(checksum(&body));
        r.extend(body);
        let parsed = parse_lan_response(&r).unwrap();
        assert_eq!(
            (parsed.netfn, parsed.rq_seq, parsed.cmd, parsed.cc),
            (1, 5, 1, 0)
        );
        assert_eq!(parsed.data, vec![0x01, 0x00, 0x00]);
        let mut bad = r.clone();
        bad[7] ^= 1;
        assert!(parse_lan_response(&bad)
            .unwrap_err()
            .contains("data checksum"));
        assert!(parse_lan_response(&r[..5]).is_err());
    }

    #[test]
    fn authenticated_packets_round_trip_and_reject_tampering() {
        for suite in [Suite::S3, Suite::S17] {
            let keys = SessionKeys::derive(suite, &[9u8; 32]);
            let p = packet_v2(payload::IPMI, 0x1234, 7, b"hello", Some((&keys, [3u8; 16])));
            assert_eq!((p.len() - 4 - suite.icv_len()) % 4, 0, "pad");
            let back = parse_packet(&p, Some(&keys)).unwrap();
            assert_eq!(back.payload, b"hello");
            assert_eq!(back.session_id, 0x1234);
            for i in 4..p.len() {
                let mut t = p.clone();
                t[i] ^= 0x01;
                assert!(
                    parse_packet(&t, Some(&keys)).is_err(),
                    "{suite:?}: flip at {i}"
                );
            }
            let other = SessionKeys::derive(suite, &[8u8; 32]);
            assert!(parse_packet(&p, Some(&other)).is_err());
        }
    }

    #[test]
    fn completion_codes_are_words() {
        assert_eq!(
            completion_code(0xd4),
            "insufficient privilege level (completion code 0xd4)"
        );
        assert!(completion_code(0xc1).starts_with("invalid command"));
    }
}
