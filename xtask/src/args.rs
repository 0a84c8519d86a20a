//! Command-line arguments of one xtask command: flags and values taken by name, anything left
//! over refused, `--help`/`-h` anywhere asks for the command's usage.

use anyhow::{Context, Result, bail};
use std::str::FromStr;

pub struct Args {
    items: Vec<Option<String>>,
}

impl Args {
    pub fn new(items: &[String]) -> Self {
        Self {
            items: items.iter().cloned().map(Some).collect(),
        }
    }

    /// Whether `--help` or `-h` was given.
    pub fn help(&self) -> bool {
        self.items
            .iter()
            .flatten()
            .any(|a| a == "--help" || a == "-h")
    }

    /// Takes a boolean flag.
    pub fn flag(&mut self, name: &str) -> bool {
        let mut found = false;
        for item in &mut self.items {
            if item.as_deref() == Some(name) {
                *item = None;
                found = true;
            }
        }
        found
    }

    /// Takes `name VALUE` (or `name=VALUE`).
    pub fn value(&mut self, name: &str) -> Result<Option<String>> {
        let prefix = format!("{name}=");
        for i in 0..self.items.len() {
            let Some(item) = self.items.get(i).cloned().flatten() else {
                continue;
            };
            if let Some(v) = item.strip_prefix(&prefix) {
                self.take(i);
                return Ok(Some(v.to_owned()));
            }
            if item == name {
                self.take(i);
                let v = self
                    .items
                    .get_mut(i + 1)
                    .and_then(Option::take)
                    .with_context(|| format!("{name} needs a value"))?;
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    fn take(&mut self, i: usize) {
        if let Some(slot) = self.items.get_mut(i) {
            *slot = None;
        }
    }

    /// Takes `name VALUE` parsed as `T`.
    pub fn parsed<T: FromStr>(&mut self, name: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.value(name)? {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{name} {v}: {e}")),
        }
    }

    /// Takes the first argument that is not a flag.
    pub fn positional(&mut self) -> Option<String> {
        for item in &mut self.items {
            if item.as_deref().is_some_and(|a| !a.starts_with('-')) {
                return item.take();
            }
        }
        None
    }

    /// Refuses whatever was not taken.
    pub fn finish(self) -> Result<()> {
        let left: Vec<String> = self.items.into_iter().flatten().collect();
        if !left.is_empty() {
            bail!("unknown argument(s): {}", left.join(" "));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Args {
        Args::new(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn values_flags_and_leftovers() {
        let mut a = args("--port 8080 --bundle --drill=invoice-outage extra");
        assert!(!a.help());
        assert_eq!(a.parsed::<u16>("--port").unwrap(), Some(8080));
        assert!(a.flag("--bundle"));
        assert_eq!(
            a.value("--drill").unwrap().as_deref(),
            Some("invoice-outage")
        );
        assert_eq!(a.positional().as_deref(), Some("extra"));
        a.finish().unwrap();
    }

    #[test]
    fn unknown_arguments_and_missing_values_are_errors() {
        assert!(args("--prot 1").finish().is_err());
        assert!(args("--port").value("--port").is_err());
        assert!(args("--port x").parsed::<u16>("--port").is_err());
        assert!(args("up -h").help());
    }
}
