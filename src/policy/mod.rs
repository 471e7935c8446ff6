//! IAM policy documents: the grammar (parse into typed statements or a
//! MalformedPolicyDocumentException that says what is wrong) and the evaluation
//! of one statement list against one request.
//!
//! The parser walks `serde_json::Value` by hand rather than deriving: policy
//! members are "a string or a list of strings", `Principal` is `"*"` or a map of
//! lists, conditions are maps of maps, and every error must name the statement and
//! member at fault, which a derive cannot do.
//!
//! How the documents combine into a decision (key policy, identity policies,
//! grants) is KMS's business: see `kms::access`.

mod condition;
mod parse;

pub use condition::{ConditionContext, Op, Qualifier};
pub use parse::{PolicyKind, parse};

/// A parsed policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    pub version: Option<String>,
    pub id: Option<String>,
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// `Principal` / `NotPrincipal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principals {
    /// `"*"` or `{"AWS": "*"}`.
    Any,
    /// `{"AWS": [...], "Service": [...]}`: AWS account ids, account-root, user,
    /// role and assumed-role ARNs; service principals (`ec2.amazonaws.com`).
    Some {
        aws: Vec<String>,
        service: Vec<String>,
    },
}

/// A list of patterns with its negation (`Action` vs `NotAction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patterns {
    pub not: bool,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub op: Op,
    pub qualifier: Option<Qualifier>,
    pub if_exists: bool,
    /// The condition key, lower-cased (condition key names are case-insensitive).
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    /// None in identity policies.
    pub principal: Option<(bool, Principals)>,
    pub action: Patterns,
    /// None when a key policy leaves it out (it then means this key).
    pub resource: Option<Patterns>,
    pub conditions: Vec<Condition>,
}

/// Who is asking, as policies see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrincipal<'a> {
    /// The caller's ARN (`…:user/alice`, `…:assumed-role/R/s`, `…:root`) or, for an
    /// AWS service, its service principal (`ec2.amazonaws.com`).
    pub arn: &'a str,
    pub account_id: &'a str,
    /// For an assumed-role session, the role's ARN (which also matches it).
    pub role_arn: Option<&'a str>,
    pub is_root: bool,
    pub is_service: bool,
}

/// What a set of documents (a principal's identity policies) says together: any
/// Deny, any Allow.
pub fn evaluate_all<'d>(
    docs: impl IntoIterator<Item = &'d PolicyDocument>,
    req: &Request<'_>,
) -> Verdict {
    docs.into_iter().fold(Verdict::default(), |acc, d| {
        let v = d.evaluate(req);
        Verdict {
            deny: acc.deny || v.deny,
            allow: acc.allow || v.allow,
            allow_account: acc.allow_account || v.allow_account,
        }
    })
}

/// How a statement's `Principal` matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PrincipalMatch {
    No,
    /// The statement names the caller's account: in a key policy this delegates to
    /// the account's IAM policies (the account root itself matches `Direct`).
    Account,
    Direct,
}

/// One request as a policy sees it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub principal: RequestPrincipal<'a>,
    /// `kms:Encrypt`.
    pub action: &'a str,
    /// The resource ARN (`*` for actions on no resource, such as `kms:CreateKey`).
    pub resource: &'a str,
    pub context: &'a ConditionContext,
}

/// What a document says about a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    pub deny: bool,
    /// An Allow whose principal matched directly (or, in identity policies, any Allow).
    pub allow: bool,
    /// An Allow whose principal matched only as the caller's account (key policies).
    pub allow_account: bool,
}

impl PolicyDocument {
    /// Evaluates every statement against `req`.
    pub fn evaluate(&self, req: &Request<'_>) -> Verdict {
        let mut v = Verdict::default();
        for s in &self.statements {
            let pm = match &s.principal {
                None => PrincipalMatch::Direct,
                Some((not, p)) => {
                    let m = principal_match(p, &req.principal);
                    if *not {
                        if m == PrincipalMatch::No {
                            PrincipalMatch::Direct
                        } else {
                            PrincipalMatch::No
                        }
                    } else {
                        m
                    }
                }
            };
            if pm == PrincipalMatch::No || !s.applies(req) {
                continue;
            }
            match (s.effect, pm) {
                (Effect::Deny, _) => v.deny = true,
                (Effect::Allow, PrincipalMatch::Direct) => v.allow = true,
                (Effect::Allow, _) => v.allow_account = true,
            }
        }
        v
    }

    /// Whether any statement has a Condition (if none does, the request context
    /// need not be built).
    pub fn has_conditions(&self) -> bool {
        self.statements.iter().any(|s| !s.conditions.is_empty())
    }

    /// Every principal ARN a document names (for the "principals must exist" check).
    pub fn named_principals(&self) -> impl Iterator<Item = &str> {
        self.statements
            .iter()
            .filter_map(|s| s.principal.as_ref())
            .flat_map(|(_, p)| match p {
                Principals::Any => [].iter(),
                Principals::Some { aws, .. } => aws.iter(),
            })
            .map(String::as_str)
    }
}

impl Statement {
    /// Action, resource and conditions (the principal is checked by the caller).
    pub fn applies(&self, req: &Request<'_>) -> bool {
        let action = self
            .action
            .values
            .iter()
            .any(|p| glob_ignore_case(p, req.action));
        if action == self.action.not {
            return false;
        }
        if let Some(r) = &self.resource {
            let hit = r.values.iter().any(|p| glob(p, req.resource));
            if hit == r.not {
                return false;
            }
        }
        self.conditions.iter().all(|c| c.holds(req.context))
    }
}

fn principal_match(p: &Principals, who: &RequestPrincipal<'_>) -> PrincipalMatch {
    let (aws, service) = match p {
        Principals::Any => return PrincipalMatch::Direct,
        Principals::Some { aws, service } => (aws, service),
    };
    if who.is_service {
        return if service.iter().any(|s| s == who.arn) {
            PrincipalMatch::Direct
        } else {
            PrincipalMatch::No
        };
    }
    let mut best = PrincipalMatch::No;
    for a in aws {
        let m = if a == "*" || a == who.arn || who.role_arn == Some(a.as_str()) {
            PrincipalMatch::Direct
        } else if account_of_root(a) == Some(who.account_id) {
            if who.is_root {
                PrincipalMatch::Direct
            } else {
                PrincipalMatch::Account
            }
        } else {
            PrincipalMatch::No
        };
        best = best.max(m);
    }
    best
}

/// `123456789012` or `arn:aws:iam::123456789012:root` → the account id.
pub fn account_of_root(p: &str) -> Option<&str> {
    if p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()) {
        return Some(p);
    }
    p.strip_prefix("arn:aws:iam::")?.strip_suffix(":root")
}

/// IAM wildcard match: `*` any run, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        return glob_slices(pattern.as_bytes(), text.as_bytes(), |a, b| a == b);
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    glob_slices(&p, &t, |a, b| a == b)
}

/// [`glob`] ignoring ASCII case (action names).
pub fn glob_ignore_case(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        return glob_slices(pattern.as_bytes(), text.as_bytes(), |a, b| {
            a.eq_ignore_ascii_case(b)
        });
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    glob_slices(&p, &t, |a, b| a.eq_ignore_ascii_case(b))
}

/// A pattern element: bytes for ASCII (no allocation), chars otherwise.
trait Wild: Copy {
    fn star(self) -> bool;
    fn one(self) -> bool;
}

impl Wild for u8 {
    fn star(self) -> bool {
        self == b'*'
    }
    fn one(self) -> bool {
        self == b'?'
    }
}

impl Wild for char {
    fn star(self) -> bool {
        self == '*'
    }
    fn one(self) -> bool {
        self == '?'
    }
}

/// Iterative wildcard matching, backtracking to the last star only.
fn glob_slices<T: Wild>(p: &[T], t: &[T], eq: impl Fn(&T, &T) -> bool) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && !p[pi].star() && (p[pi].one() || eq(&p[pi], &t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi].star() {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| c.star())
}

#[cfg(test)]
mod tests;
