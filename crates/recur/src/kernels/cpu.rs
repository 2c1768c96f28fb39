//! Which instruction set the kernels run on, chosen once per process in this one place.
//!
//! Three paths: [`CpuPath::Avx512`] (x86_64 with AVX-512 F, BW, DQ and VL: Intel Xeon since
//! Skylake-SP, AMD since Zen 4), [`CpuPath::Avx2`] (x86_64 with AVX2 and FMA) and
//! [`CpuPath::Portable`] (plain Rust, any CPU). The best path the CPU supports is detected once;
//! the environment variable `RECUR_CPU` (`avx512`, `avx2` or `portable`, read once, case
//! insensitive) forces a lower one, so one machine can test and benchmark every path:
//!
//! ```text
//! RECUR_CPU=avx2 cargo test --release -p recur
//! ```
//!
//! The rule for a request: the path used is the lower of the one asked for and the best one the
//! CPU has, so asking for a path the CPU lacks falls back to the best it has (`avx512` on an
//! AVX2-only CPU runs AVX2), never to code the CPU cannot execute. An empty value or `auto`
//! asks for the best; an unrecognised value is ignored (the best path runs) and reported by
//! [`selection`], so a front end can warn about it.
//!
//! Paths differ only in how sums are grouped, so results agree to rounding, not bit for bit.

use std::sync::OnceLock;

/// An instruction set the kernels can run on, from the most portable to the widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuPath {
    /// Plain Rust, vectorised by the compiler for the baseline target (SSE2 on x86_64).
    Portable,
    /// x86_64 with AVX2 and FMA: 16 registers of 8 `f32` lanes.
    Avx2,
    /// x86_64 with AVX-512 F, BW, DQ and VL (and AVX2 and FMA): 32 registers of 16 `f32` lanes.
    Avx512,
}

impl CpuPath {
    /// Every path, from the most portable to the widest.
    pub const ALL: [CpuPath; 3] = [CpuPath::Portable, CpuPath::Avx2, CpuPath::Avx512];

    /// The name `RECUR_CPU` takes for this path: `portable`, `avx2` or `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            CpuPath::Portable => "portable",
            CpuPath::Avx2 => "avx2",
            CpuPath::Avx512 => "avx512",
        }
    }

    /// The path named `name` (as [`CpuPath::name`] writes it, any case), if it is one.
    pub fn from_name(name: &str) -> Option<CpuPath> {
        CpuPath::ALL.into_iter().find(|path| path.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether the running CPU can execute this path.
    pub fn supported(self) -> bool {
        self <= detected()
    }
}

impl std::fmt::Display for CpuPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the process's path was chosen: what the CPU has, what `RECUR_CPU` asked for, what runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The widest path the CPU supports.
    pub detected: CpuPath,
    /// The value of `RECUR_CPU`, when set (verbatim, also when not a path's name).
    pub requested: Option<String>,
    /// The path the kernels run: the lower of `detected` and the one requested (`detected` when
    /// nothing, `auto` or an unrecognised value was asked for).
    pub chosen: CpuPath,
}

impl Selection {
    /// Whether `RECUR_CPU` holds something other than a path's name, `auto` or nothing (and was
    /// therefore ignored).
    pub fn request_ignored(&self) -> bool {
        self.requested.as_deref().is_some_and(|r| {
            let r = r.trim();
            !r.is_empty() && !r.eq_ignore_ascii_case("auto") && CpuPath::from_name(r).is_none()
        })
    }
}

/// The widest path the running CPU supports, detected once.
pub fn detected() -> CpuPath {
    static DETECTED: OnceLock<CpuPath> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

fn detect() -> CpuPath {
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
                return CpuPath::Avx512;
            }
            return CpuPath::Avx2;
        }
    }
    CpuPath::Portable
}

/// The path `requested` (a `RECUR_CPU` value) leads to on a CPU whose best path is `detected`.
fn choose(detected: CpuPath, requested: Option<&str>) -> CpuPath {
    match requested.and_then(CpuPath::from_name) {
        Some(asked) => asked.min(detected),
        None => detected,
    }
}

/// How this process's path was chosen (`RECUR_CPU` is read on the first call, and only then).
pub fn selection() -> &'static Selection {
    static SELECTION: OnceLock<Selection> = OnceLock::new();
    SELECTION.get_or_init(|| {
        let detected = detected();
        let requested = std::env::var("RECUR_CPU").ok();
        let chosen = choose(detected, requested.as_deref());
        Selection { detected, requested, chosen }
    })
}

/// The path the kernels run on the calling thread: [`selection`]'s choice (unit tests of the
/// kernels may override it on their own thread).
#[inline]
pub fn path() -> CpuPath {
    #[cfg(test)]
    if let Some(forced) = FORCED.with(|f| f.get()) {
        return forced;
    }
    selection().chosen
}

#[cfg(test)]
thread_local! {
    /// Set by [`with_path`] on the test's own thread.
    static FORCED: std::cell::Cell<Option<CpuPath>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with [`path`] answering `forced` on this thread, which must be supported. Kernels
/// read the path on the calling thread and hand it to the threads they spawn, so everything `f`
/// runs takes it.
#[cfg(test)]
pub(crate) fn with_path<R>(forced: CpuPath, f: impl FnOnce() -> R) -> R {
    assert!(forced.supported(), "{forced} is not supported by this CPU");
    let before = FORCED.with(|c| c.replace(Some(forced)));
    let out = f();
    FORCED.with(|c| c.set(before));
    out
}

/// Every path the running CPU supports, most portable first (for tests to run each).
#[cfg(test)]
pub(crate) fn supported_paths() -> Vec<CpuPath> {
    CpuPath::ALL.into_iter().filter(|p| p.supported()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_never_picks_more_than_the_cpu_has() {
        use CpuPath::*;
        for detected in CpuPath::ALL {
            assert_eq!(choose(detected, None), detected);
            assert_eq!(choose(detected, Some("auto")), detected);
            assert_eq!(choose(detected, Some("")), detected);
            assert_eq!(choose(detected, Some("sse9")), detected, "unrecognised: ignored");
            assert_eq!(choose(detected, Some("portable")), Portable);
            assert_eq!(choose(detected, Some(" AVX2 ")), detected.min(Avx2));
            assert_eq!(choose(detected, Some("avx512")), detected);
        }
    }

    #[test]
    fn names_round_trip_and_unknown_requests_are_flagged() {
        for path in CpuPath::ALL {
            assert_eq!(CpuPath::from_name(path.name()), Some(path));
            assert_eq!(path.to_string(), path.name());
        }
        let sel = |r: Option<&str>| Selection {
            detected: CpuPath::Portable,
            requested: r.map(str::to_owned),
            chosen: CpuPath::Portable,
        };
        assert!(sel(Some("avx-512")).request_ignored());
        for fine in [None, Some(""), Some("Auto"), Some("avx2")] {
            assert!(!sel(fine).request_ignored(), "{fine:?}");
        }
    }

    #[test]
    fn the_forced_path_is_per_thread_and_restored() {
        let outside = path();
        for forced in supported_paths() {
            with_path(forced, || {
                assert_eq!(path(), forced);
                std::thread::spawn(move || assert_eq!(path(), outside)).join().unwrap();
            });
            assert_eq!(path(), outside);
        }
        assert!(CpuPath::Portable.supported());
    }
}
