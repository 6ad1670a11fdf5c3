//! RMCP+ cryptography for the two cipher suites tandem speaks (IPMI v2.0
//! §13.28–13.31):
//!
//! | suite | authentication   | integrity        | confidentiality |
//! |-------|------------------|------------------|-----------------|
//! | 3     | RAKP-HMAC-SHA1   | HMAC-SHA1-96     | AES-CBC-128     |
//! | 17    | RAKP-HMAC-SHA256 | HMAC-SHA256-128  | AES-CBC-128     |
//!
//! Everything here is a pure function of its inputs, so the known-answer
//! tests below pin every derivation (their expected values were computed
//! with Python's `hmac`/`hashlib`, an implementation independent of ours).

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};

/// A cipher suite tandem can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    S3,
    /// Suite 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    S17,
}

impl Suite {
    /// The suite for an id, if tandem speaks it.
    pub fn from_id(id: u8) -> Option<Suite> {
        match id {
            3 => Some(Suite::S3),
            17 => Some(Suite::S17),
            _ => None,
        }
    }

    /// The suite's id.
    pub fn id(self) -> u8 {
        match self {
            Suite::S3 => 3,
            Suite::S17 => 17,
        }
    }

    /// Authentication algorithm number (Open Session payload).
    pub fn auth_alg(self) -> u8 {
        match self {
            Suite::S3 => 0x01,
            Suite::S17 => 0x03,
        }
    }

    /// Integrity algorithm number.
    pub fn integrity_alg(self) -> u8 {
        match self {
            Suite::S3 => 0x01,
            Suite::S17 => 0x04,
        }
    }

    /// Confidentiality algorithm number (AES-CBC-128 for both).
    pub fn confidentiality_alg(self) -> u8 {
        0x01
    }

    /// Length of the RAKP key exchange authentication codes (the full HMAC).
    pub fn rakp_len(self) -> usize {
        match self {
            Suite::S3 => 20,
            Suite::S17 => 32,
        }
    }

    /// Length of the truncated HMACs: RAKP4's integrity check value and
    /// every session packet's AuthCode.
    pub fn icv_len(self) -> usize {
        match self {
            Suite::S3 => 12,
            Suite::S17 => 16,
        }
    }

    /// HMAC with the suite's hash.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Suite::S3 => {
                // HMAC accepts keys of any length, so new_from_slice cannot fail.
                let Ok(mut m) = Hmac::<sha1::Sha1>::new_from_slice(key) else {
                    return Vec::new();
                };
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            }
            Suite::S17 => {
                let Ok(mut m) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
                    return Vec::new();
                };
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            }
        }
    }
}

/// The user key K_UID: the password, zero-padded to 20 bytes (IPMI v2.0
/// passwords are at most 20 bytes).
pub fn user_key(password: &[u8]) -> Vec<u8> {
    let mut k = password.to_vec();
    if k.len() < 20 {
        k.resize(20, 0);
    }
    k
}

/// The inputs both RAKP sides hash.
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    /// The suite.
    pub suite: Suite,
    /// K_UID.
    pub kuid: &'a [u8],
    /// Our (remote console) session id, as sent (little-endian).
    pub console_sid: [u8; 4],
    /// The BMC's (managed system) session id, as received.
    pub bmc_sid: [u8; 4],
    /// Our random number R_M.
    pub console_rand: [u8; 16],
    /// The BMC's random number R_C.
    pub bmc_rand: [u8; 16],
    /// The BMC's GUID, as received.
    pub bmc_guid: [u8; 16],
    /// The requested role byte of RAKP 1 (privilege level and lookup bit).
    pub role: u8,
    /// The user name.
    pub user: &'a [u8],
}

impl Exchange<'_> {
    fn user_len(&self) -> [u8; 1] {
        [self.user.len() as u8]
    }

    /// The key exchange authentication code the BMC must send in RAKP 2.
    pub fn rakp2_code(&self) -> Vec<u8> {
        self.suite.hmac(
            self.kuid,
            &[
                &self.console_sid,
                &self.bmc_sid,
                &self.console_rand,
                &self.bmc_rand,
                &self.bmc_guid,
                &[self.role],
                &self.user_len(),
                self.user,
            ],
        )
    }

    /// The key exchange authentication code we send in RAKP 3.
    pub fn rakp3_code(&self) -> Vec<u8> {
        self.suite.hmac(
            self.kuid,
            &[
                &self.bmc_rand,
                &self.console_sid,
                &[self.role],
                &self.user_len(),
                self.user,
            ],
        )
    }

    /// The session integrity key SIK (K_G = K_UID: no BMC key).
    pub fn sik(&self) -> Vec<u8> {
        self.suite.hmac(
            self.kuid,
            &[
                &self.console_rand,
                &self.bmc_rand,
                &[self.role],
                &self.user_len(),
                self.user,
            ],
        )
    }

    /// The integrity check value the BMC must send in RAKP 4.
    pub fn rakp4_icv(&self, sik: &[u8]) -> Vec<u8> {
        let mut v = self
            .suite
            .hmac(sik, &[&self.console_rand, &self.bmc_sid, &self.bmc_guid]);
        v.truncate(self.suite.icv_len());
        v
    }
}

/// The keys of an established session.
#[derive(Clone)]
pub struct SessionKeys {
    /// The suite.
    pub suite: Suite,
    /// K1, the integrity key.
    pub k1: Vec<u8>,
    /// The first 16 bytes of K2, the AES-128 key.
    pub aes: [u8; 16],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKeys({:?}, <redacted>)", self.suite)
    }
}

impl SessionKeys {
    /// Derives K1 and K2 from the SIK: K_n = HMAC_SIK(n repeated hash-length times).
    pub fn derive(suite: Suite, sik: &[u8]) -> Self {
        let n = suite.rakp_len();
        let k1 = suite.hmac(sik, &[&vec![0x01; n]]);
        let k2 = suite.hmac(sik, &[&vec![0x02; n]]);
        let mut aes = [0u8; 16];
        aes.copy_from_slice(&k2[..16]);
        SessionKeys { suite, k1, aes }
    }

    /// The AuthCode of a session packet: HMAC_K1 over everything from the
    /// AuthType byte to the Next Header byte, truncated.
    pub fn auth_code(&self, data: &[u8]) -> Vec<u8> {
        let mut v = self.suite.hmac(&self.k1, &[data]);
        v.truncate(self.suite.icv_len());
        v
    }

    /// Encrypts a payload: IV, then AES-CBC-128 of the payload padded with
    /// 1, 2, 3, … and the pad length (IPMI's own padding).
    pub fn encrypt(&self, iv: [u8; 16], payload: &[u8]) -> Vec<u8> {
        let pad = (16 - (payload.len() + 1) % 16) % 16;
        let mut buf = Vec::with_capacity(16 + payload.len() + pad + 1);
        buf.extend_from_slice(payload);
        buf.extend((1..=pad).map(|i| i as u8));
        buf.push(pad as u8);
        let len = buf.len();
        let enc = cbc::Encryptor::<aes::Aes128>::new(&self.aes.into(), &iv.into());
        // The buffer is a multiple of the block size by construction.
        let out = match enc.encrypt_padded_mut::<NoPadding>(&mut buf, len) {
            Ok(out) => out.to_vec(),
            Err(_) => return Vec::new(),
        };
        let mut packet = iv.to_vec();
        packet.extend_from_slice(&out);
        packet
    }

    /// Decrypts a payload made by [`encrypt`](Self::encrypt); `None` when
    /// the length or the padding is wrong.
    pub fn decrypt(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < 32 || data.len() % 16 != 0 {
            return None;
        }
        let (iv, body) = data.split_at(16);
        let mut iv16 = [0u8; 16];
        iv16.copy_from_slice(iv);
        let mut buf = body.to_vec();
        let dec = cbc::Decryptor::<aes::Aes128>::new(&self.aes.into(), &iv16.into());
        let plain = dec.decrypt_padded_mut::<NoPadding>(&mut buf).ok()?.to_vec();
        let pad = *plain.last()? as usize;
        if pad >= 16 || pad + 1 > plain.len() {
            return None;
        }
        let body_len = plain.len() - pad - 1;
        if !plain[body_len..plain.len() - 1]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i + 1) as u8)
        {
            return None;
        }
        Some(plain[..body_len].to_vec())
    }
}

#[cfg(test)]
mod tests;
