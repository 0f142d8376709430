//! An error and its causes on one line: what the binaries print last, and what logs and
//! `status` fields holding one string show.

/// `error: cause: cause`, each cause once. A cause whose text already ends the line is left
/// out: some errors (reqwest's, hyper's) repeat their own source in their message, and a plain
/// walk of the chain (anyhow's `{:#}`) printed "Connection refused" three times.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let cause = c.to_string();
        if !s.ends_with(&cause) {
            s.push_str(": ");
            s.push_str(&cause);
        }
        src = c.source();
    }
    s
}

/// sysexits.h EX_CONFIG: the units' `RestartPreventExitStatus`, since restarting cannot fix a
/// configuration only the operator can.
pub const EX_CONFIG: u8 = 78;

/// The binaries' last word: `<name>: <error chain>` on stderr, and the exit status (EX_CONFIG
/// when `is_config`, 1 otherwise).
pub fn exit_with(
    name: &str,
    e: &(dyn std::error::Error + 'static),
    is_config: bool,
) -> std::process::ExitCode {
    eprintln!("{name}: {}", error_chain(e));
    std::process::ExitCode::from(if is_config { EX_CONFIG } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    /// An error with a message and an optional cause.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn chain(msgs: &[&'static str]) -> E {
        let mut e: Option<Box<E>> = None;
        for m in msgs.iter().rev() {
            e = Some(Box::new(E(m, e)));
        }
        *e.unwrap()
    }

    #[test]
    fn each_cause_once() {
        let plain = chain(&["consul read k", "error sending request", "refused (111)"]);
        assert_eq!(
            error_chain(&plain),
            "consul read k: error sending request: refused (111)"
        );
        // hyper's way: messages that already end with their causes.
        let repeating = chain(&[
            "consul read k",
            "connect: tcp: refused (111)",
            "connect: tcp: refused (111)",
            "tcp: refused (111)",
            "refused (111)",
        ]);
        assert_eq!(
            error_chain(&repeating),
            "consul read k: connect: tcp: refused (111)"
        );
    }
}
