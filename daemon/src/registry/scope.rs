//! Which agencies an agency's figures sum: itself; 本级 (itself and the agencies of its
//! jurisdiction at its own level); or its whole jurisdiction (the agencies below it through
//! `parent`).

use super::{Agency, Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Agency,
    Level,
    Tree,
}

impl Scope {
    /// The name in the API and the documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Agency => "agency",
            Scope::Level => "level",
            Scope::Tree => "tree",
        }
    }
}

/// A scope that is not one of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope `{0}` is not one of agency, level (本级), tree (the whole jurisdiction)")]
pub struct UnknownScope(pub String);

impl std::str::FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, UnknownScope> {
        match s {
            "agency" => Ok(Scope::Agency),
            "level" => Ok(Scope::Level),
            "tree" => Ok(Scope::Tree),
            _ => Err(UnknownScope(s.to_string())),
        }
    }
}

/// The agencies `agency`'s figures over `scope` sum, the agency first.
pub fn scope_members<'a>(reg: &'a Registry, agency: &'a Agency, scope: Scope) -> Vec<&'a str> {
    match scope {
        Scope::Agency => vec![agency.id.as_str()],
        Scope::Level => reg.subtree(&agency.id).into_iter().filter(|a| a.level == agency.level).map(|a| a.id.as_str()).collect(),
        Scope::Tree => reg.subtree(&agency.id).into_iter().map(|a| a.id.as_str()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A province bureau `p` with a province agency `p2` and a city bureau `c` below it, and a
    /// county agency `k` below the city: 本级 of `p` is p and p2 (its level), the tree all four.
    #[test]
    fn scopes_sum_the_jurisdiction() {
        let reg = Registry::parse(
            r#"
[[agency]]
id = "p"
name = "P"
level = "province"
[[agency]]
id = "p2"
name = "P2"
level = "province"
parent = "p"
[[agency]]
id = "c"
name = "C"
level = "city"
parent = "p"
[[agency]]
id = "k"
name = "K"
level = "county"
parent = "c"
"#,
        )
        .unwrap();
        let p = reg.agency("p").unwrap();
        assert_eq!(scope_members(&reg, p, Scope::Agency), ["p"]);
        assert_eq!(scope_members(&reg, p, Scope::Level), ["p", "p2"]);
        assert_eq!(scope_members(&reg, p, Scope::Tree), ["p", "p2", "c", "k"]);
        assert_eq!("tree".parse::<Scope>(), Ok(Scope::Tree));
        assert_eq!("world".parse::<Scope>().unwrap_err().to_string(), "scope `world` is not one of agency, level (本级), tree (the whole jurisdiction)");
    }
}
