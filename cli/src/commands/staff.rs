//! `overstap staff`: accounts for the node's web app (mentors, decanen, admins). The password
//! goes to the node over its local API and is kept there as an argon2id hash only.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use overstap_proto::pb::AddStaffRequest;
use overstap_region::client::explain;

use super::NodeOpts;

#[derive(Subcommand)]
pub enum StaffCmd {
    /// Add a staff account to the node's web app.
    Add {
        /// The user name to sign in with (letters, digits and . - _ @).
        #[arg(long)]
        user: String,
        /// The name students and parents read, e.g. "Meneer De Vries" (default: the user name).
        #[arg(long, default_value = "")]
        name: String,
        /// mentor (enrols and follows their own students), decaan (every handover of the
        /// school) or admin.
        #[arg(long)]
        role: String,
        /// A file holding the password on its first line; without it, the password is read
        /// from the first line of standard input.
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        node: NodeOpts,
    },
}

pub(super) async fn staff(cmd: StaffCmd) -> anyhow::Result<()> {
    match cmd {
        StaffCmd::Add {
            user,
            name,
            role,
            password_file,
            node,
        } => {
            let line = match password_file {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                None => {
                    eprintln!("The password for {user}, on one line (at least 10 characters):");
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if line.is_empty() {
                bail!(
                    "no password was given: put it on the first line of --password-file or of standard input"
                );
            }
            node.api()
                .await?
                .add_staff(AddStaffRequest {
                    username: user.clone(),
                    password: line,
                    role: role.clone(),
                    display_name: name,
                })
                .await
                .map_err(explain)?;
            println!("{user} can now sign in to the node's web app as {role}.");
            Ok(())
        }
    }
}
