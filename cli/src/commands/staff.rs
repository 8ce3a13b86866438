//! `overstap staff`: accounts for the node's web app (mentors, decanen, admins). The password
//! goes to the node over its local API and is kept there as an argon2id hash only.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use overstap_proto::pb::{AddStaffRequest, InviteStudentRequest};
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
    /// Invite a student to the web app for a mentor (from the school's records, say): prints a
    /// one-time link for the student and, under 16, one for a parent.
    Invite {
        /// The student's name as the school knows it.
        #[arg(long)]
        name: String,
        /// The student's class, e.g. 4B.
        #[arg(long)]
        class: String,
        /// YYYY-MM.
        #[arg(long)]
        birth_month: String,
        /// The mentor's user name: they compare the short codes with the student in person.
        #[arg(long)]
        mentor: String,
        /// The address people reach the web app at (the school's HTTPS address); default: the
        /// address in the node folder's web.url.
        #[arg(long)]
        web_url: Option<String>,
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
        StaffCmd::Invite {
            name,
            class,
            birth_month,
            mentor,
            web_url,
            node,
        } => {
            let base = web_url
                .or_else(|| {
                    let dir = node.node_dir.as_ref()?;
                    std::fs::read_to_string(dir.join("web.url")).ok()
                })
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .unwrap_or_default();
            let invited = node
                .api()
                .await?
                .invite_student(InviteStudentRequest {
                    name: name.clone(),
                    class_name: class.clone(),
                    birth_month,
                    mentor: mentor.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "{name} ({class}) is invited; {mentor} compares the codes in person. The links work once, until {}.",
                overstap_proto::format_time(invited.expires_at)
            );
            println!("   student: {base}{}", invited.student_path);
            if !invited.parent_path.is_empty() {
                println!("   parent:  {base}{}", invited.parent_path);
            }
            println!(
                "Give each link only to its own person: whoever opens it first makes the key."
            );
            Ok(())
        }
    }
}
