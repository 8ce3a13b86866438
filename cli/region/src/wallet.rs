//! The student's side: a wallet file with the student's own key (made on the student's device,
//! never sent anywhere) and the pseudonym the home school issued; and guardian key files.

use std::path::Path;

use anyhow::Context;
use ed25519_dalek::SigningKey;
use overstap_proto::config::parse_key_hex;
use overstap_proto::pb::{Signed, StudentCard};
use overstap_proto::sign::{Domain, decode_body};
use prost::Message;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct WalletFile {
    pseudonym: String,
    home_org: String,
    birth_month: String,
    secret_key: String,
    /// The student card as issued by the home node (protobuf, hex).
    card: String,
}

pub struct Wallet {
    pub pseudonym: String,
    pub home_org: String,
    pub birth_month: String,
    pub key: SigningKey,
    pub card: Signed,
}

impl Wallet {
    pub fn new(key: SigningKey, card: Signed) -> anyhow::Result<Self> {
        let c: StudentCard = decode_body(Domain::StudentCard, &card)?;
        Ok(Wallet {
            pseudonym: c.pseudonym,
            home_org: c.home_org,
            birth_month: c.birth_month,
            key,
            card,
        })
    }

    pub fn card(&self) -> anyhow::Result<StudentCard> {
        Ok(decode_body(Domain::StudentCard, &self.card)?)
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let f = WalletFile {
            pseudonym: self.pseudonym.clone(),
            home_org: self.home_org.clone(),
            birth_month: self.birth_month.clone(),
            secret_key: hex::encode(self.key.to_bytes()),
            card: hex::encode(self.card.encode_to_vec()),
        };
        overstap_node::write_secret(path, serde_json::to_string_pretty(&f)?.as_bytes())
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading wallet {}", path.display()))?;
        let f: WalletFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a student wallet", path.display()))?;
        let key = SigningKey::from_bytes(&parse_key_hex(&f.secret_key, "student key")?);
        let card = Signed::decode(hex::decode(&f.card)?.as_slice())
            .context("the wallet's card does not decode")?;
        Ok(Wallet {
            pseudonym: f.pseudonym,
            home_org: f.home_org,
            birth_month: f.birth_month,
            key,
            card,
        })
    }
}

/// Writes a new guardian key (0600) and returns it.
pub fn new_guardian_key(path: &Path) -> anyhow::Result<SigningKey> {
    let key = overstap_proto::sign::generate_signing_key();
    overstap_node::write_secret(path, hex::encode(key.to_bytes()).as_bytes())?;
    Ok(key)
}

pub fn load_key(path: &Path, what: &'static str) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    Ok(SigningKey::from_bytes(&parse_key_hex(&text, what)?))
}
