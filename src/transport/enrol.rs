//! Enrolment on the wire: the join code `procsync remote invite` prints
//! (one line: the hub's endpoint and fingerprint, the invitation and its
//! secret, checksummed so a truncated or mistyped code is told apart from
//! a refused one), and the client half of the `Join` and `Leave` calls.

use base64::Engine;
use prost::Message;

use super::pb::peer as pb;
use super::peer::{PeerClient, call_error, within_deadline};
use super::protocol::{CallError, PeerTarget};

/// What every join code starts with; the 1 is the code's version.
pub const CODE_PREFIX: &str = "psjoin1.";

/// Bytes of blake3 checksum after the code's message.
const CHECKSUM_BYTES: usize = 4;

/// What a join code holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinCode {
    pub endpoint: String,
    pub fingerprint: String,
    pub invite: String,
    pub secret: String,
    pub hub_name: String,
    pub expires_on: u64,
    /// Whether the hub dials its members (else they pull).
    pub hub_dials: bool,
}

impl JoinCode {
    /// The code as one line to paste.
    pub fn encode(&self) -> String {
        let mut bytes = pb::JoinCode {
            endpoint: self.endpoint.clone(),
            fingerprint: self.fingerprint.clone(),
            invite: self.invite.clone(),
            secret: self.secret.clone(),
            hub_name: self.hub_name.clone(),
            expires_on_ms: self.expires_on,
            hub_dials: self.hub_dials,
        }
        .encode_to_vec();
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(&sum.as_bytes()[..CHECKSUM_BYTES]);
        format!(
            "{CODE_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Reads a pasted code, saying in a sentence what is wrong with it.
    pub fn parse(text: &str) -> Result<JoinCode, String> {
        let text = text.trim();
        let Some(body) = text.strip_prefix(CODE_PREFIX) else {
            return Err(format!(
                "this is not a join code: a join code starts with `{CODE_PREFIX}`; copy the whole line `procsync remote invite` printed on the hub"
            ));
        };
        let incomplete = "the join code is incomplete or mistyped (its checksum does not match); copy the whole line again";
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| incomplete.to_string())?;
        if bytes.len() <= CHECKSUM_BYTES {
            return Err(incomplete.to_string());
        }
        let (message, sum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        if blake3::hash(message).as_bytes()[..CHECKSUM_BYTES] != *sum {
            return Err(incomplete.to_string());
        }
        let code = pb::JoinCode::decode(message).map_err(|_| incomplete.to_string())?;
        if code.endpoint.is_empty() || code.fingerprint.is_empty() || code.secret.is_empty() {
            return Err(incomplete.to_string());
        }
        Ok(JoinCode {
            endpoint: code.endpoint,
            fingerprint: code.fingerprint,
            invite: code.invite,
            secret: code.secret,
            hub_name: code.hub_name,
            expires_on: code.expires_on_ms,
            hub_dials: code.hub_dials,
        })
    }
}

/// A step of a join, as the joining side asks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinStep {
    Enrol,
    Abandon,
    Confirm,
}

/// What the joining side sends.
#[derive(Clone, Debug, Default)]
pub struct JoinRequest {
    pub invite: String,
    pub secret: String,
    pub fingerprint: String,
    pub instance_sys_id: String,
    pub instance_name: String,
    pub remote_system_sys_id: String,
    pub endpoint: String,
    pub token: String,
}

/// What the hub answers.
#[derive(Clone, Debug, Default)]
pub struct JoinAnswer {
    pub protocol_version: u32,
    pub member: String,
    pub group: String,
    pub remote_system_sys_id: String,
    pub token: String,
    pub instance_sys_id: String,
    pub instance_name: String,
    pub definitions_json: String,
    pub problems: Vec<String>,
    /// Whether the hub dials the joining instance (else it pulls).
    pub dials: bool,
}

pub fn step_from_pb(step: i32) -> Option<JoinStep> {
    match pb::JoinStep::try_from(step).ok()? {
        pb::JoinStep::Enrol => Some(JoinStep::Enrol),
        pb::JoinStep::Abandon => Some(JoinStep::Abandon),
        pb::JoinStep::Confirm => Some(JoinStep::Confirm),
        pb::JoinStep::Unspecified => None,
    }
}

impl PeerClient {
    /// One step of a join; the target's token is not read by the hub.
    pub async fn join(
        &mut self,
        step: JoinStep,
        request: JoinRequest,
    ) -> Result<JoinAnswer, CallError> {
        let step = match step {
            JoinStep::Enrol => pb::JoinStep::Enrol,
            JoinStep::Abandon => pb::JoinStep::Abandon,
            JoinStep::Confirm => pb::JoinStep::Confirm,
        };
        let request = self.request(pb::JoinRequest {
            protocol_version: super::protocol::PROTOCOL_VERSION,
            step: step as i32,
            invite: request.invite,
            secret: request.secret,
            fingerprint: request.fingerprint,
            instance_sys_id: request.instance_sys_id,
            instance_name: request.instance_name,
            remote_system_sys_id: request.remote_system_sys_id,
            endpoint: request.endpoint,
            token: request.token,
        });
        let call = async {
            self.inner
                .join(request)
                .await
                .map_err(|s| call_error(&self.endpoint, s))
        };
        let answer = within_deadline(&self.endpoint, "Join", call)
            .await?
            .into_inner();
        Ok(JoinAnswer {
            protocol_version: answer.protocol_version,
            member: answer.member,
            group: answer.group,
            remote_system_sys_id: answer.remote_system_sys_id,
            token: answer.token,
            instance_sys_id: answer.instance_sys_id,
            instance_name: answer.instance_name,
            definitions_json: answer.definitions_json,
            problems: answer.problems,
            dials: answer.dials,
        })
    }

    /// Tells the peer this instance removed its link to it.
    pub async fn leave(&mut self) -> Result<(), CallError> {
        let request = self.request(pb::LeaveRequest {});
        let call = async {
            self.inner
                .leave(request)
                .await
                .map_err(|s| call_error(&self.endpoint, s))
        };
        within_deadline(&self.endpoint, "Leave", call).await?;
        Ok(())
    }
}

/// How to reach the hub a code names, before any remote system exists.
pub fn target_of_code(code: &JoinCode, cert_pem: String, key_pem: String) -> PeerTarget {
    PeerTarget {
        endpoint: code.endpoint.clone(),
        fingerprint: code.fingerprint.clone(),
        // The hub does not read a token on Join.
        token: "join".to_string(),
        cert_pem,
        key_pem,
        link: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> JoinCode {
        JoinCode {
            endpoint: "https://hub.example:7481".to_string(),
            fingerprint: format!("sha256:{}", "ab".repeat(32)),
            invite: "0123456789abcdef0123456789abcdef".to_string(),
            secret: "s3cret".to_string(),
            hub_name: "hub".to_string(),
            expires_on: 1_800_000_000_000,
            hub_dials: false,
        }
    }

    #[test]
    fn a_code_round_trips_and_a_damaged_one_says_so() {
        let text = code().encode();
        assert!(text.starts_with(CODE_PREFIX));
        assert!(!text.contains(char::is_whitespace));
        assert_eq!(JoinCode::parse(&format!("  {text}\n")), Ok(code()));
        let truncated = &text[..text.len() - 5];
        assert!(
            JoinCode::parse(truncated)
                .unwrap_err()
                .contains("incomplete")
        );
        let mut changed = text.clone().into_bytes();
        let at = changed.len() / 2;
        changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).unwrap();
        assert!(
            JoinCode::parse(&changed)
                .unwrap_err()
                .contains("incomplete")
        );
        assert!(
            JoinCode::parse("hello")
                .unwrap_err()
                .contains("not a join code")
        );
    }
}
