//! The web app's words come from the catalogue it shares with the coordinators' dashboard
//! (`overstap-words`, `proto/words/src/messages.toml`).

pub use overstap_words::*;

#[cfg(test)]
mod tests {
    /// Every key a page of the web app asks for is in the catalogue.
    #[test]
    fn every_key_the_pages_use_is_in_the_catalogue() {
        let sources = [
            include_str!("mod.rs"),
            include_str!("page.rs"),
            include_str!("staff.rs"),
            include_str!("enrol.rs"),
            include_str!("student.rs"),
            include_str!("passport.rs"),
            include_str!("consent.rs"),
            include_str!("trail.rs"),
            include_str!("class.rs"),
            include_str!("keys.rs"),
            include_str!("guardian.rs"),
        ];
        for source in sources {
            for part in source
                .split("t(lang, \"")
                .skip(1)
                .chain(source.split("tf(lang, \"").skip(1))
            {
                let key = part.split('"').next().unwrap();
                assert!(overstap_words::has(key), "{key} is not in messages.toml");
            }
        }
    }
}
