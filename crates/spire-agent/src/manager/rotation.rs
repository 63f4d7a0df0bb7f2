//! When to rotate an SVID (SPIRE's `rotationutil`): once its remaining lifetime falls to half
//! of the total, moved by a jitter of up to ±10 % of the half-life so that many agents (or many
//! SVIDs) do not all rotate at the same instant; or, with `availability_target` set and
//! feasible (lifetime − target ≥ 12 h), once the remaining lifetime falls to the target.

use std::time::{Duration, SystemTime};

/// Lifetime that must remain beyond `availability_target` for the target to apply.
pub const MIN_AVAILABILITY_MARGIN: Duration = Duration::from_secs(12 * 3600);

/// A random jitter factor in `[-1.0, 1.0]`, to be scaled to ±10 % of the half-life.
pub fn random_jitter() -> f64 {
    let mut b = [0u8; 4];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return 0.0;
    }
    let v = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
    v * 2.0 - 1.0
}

/// The instant at which an SVID valid from `not_before` to `not_after` is due for rotation.
/// `jitter` in `[-1, 1]` moves the half-life point by up to ±10 % of the half-life.
pub fn rotation_deadline(
    not_before: SystemTime,
    not_after: SystemTime,
    jitter: f64,
    availability_target: Option<Duration>,
) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    if let Some(target) = availability_target
        && lifetime.saturating_sub(target) >= MIN_AVAILABILITY_MARGIN
    {
        return not_after - target;
    }
    let half = lifetime / 2;
    let j = jitter.clamp(-1.0, 1.0) * 0.1;
    let shift = half.mul_f64(j.abs());
    let point = if j >= 0.0 { half + shift } else { half - shift };
    not_before + point
}

/// Whether an SVID is due at `now`.
pub fn should_rotate(now: SystemTime, deadline: SystemTime, not_after: SystemTime) -> bool {
    now >= deadline || now >= not_after
}

/// How long to sleep until `deadline` as seen from `now` (zero if past).
pub fn until(now: SystemTime, deadline: SystemTime) -> Duration {
    deadline.duration_since(now).unwrap_or(Duration::ZERO)
}

/// Exponential backoff: `base * 2^failures`, capped at `max`.
pub fn backoff(base: Duration, failures: u32, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spire_spiffe::{Clock, FakeClock};

    #[test]
    fn rotates_at_half_life_within_ten_percent() {
        let clock = FakeClock::at_unix(1_000_000);
        let nb = clock.now();
        let na = nb + Duration::from_secs(3600);
        for jitter in [-1.0, -0.3, 0.0, 0.5, 1.0, 7.0] {
            let d = rotation_deadline(nb, na, jitter, None);
            let at = d.duration_since(nb).unwrap().as_secs();
            assert!((1620..=1980).contains(&at), "jitter {jitter}: {at}");
        }
        assert_eq!(
            rotation_deadline(nb, na, 0.0, None),
            nb + Duration::from_secs(1800)
        );
        assert_eq!(
            rotation_deadline(nb, na, 1.0, None),
            nb + Duration::from_secs(1980)
        );
        let d = rotation_deadline(nb, na, 0.0, None);
        clock.advance(Duration::from_secs(1799));
        assert!(!should_rotate(clock.now(), d, na));
        assert_eq!(until(clock.now(), d), Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        assert!(should_rotate(clock.now(), d, na));
        assert_eq!(until(clock.now(), d), Duration::ZERO);
    }

    #[test]
    fn random_jitter_stays_in_range() {
        for _ in 0..100 {
            let j = random_jitter();
            assert!((-1.0..=1.0).contains(&j));
        }
    }

    #[test]
    fn availability_target_applies_only_when_feasible() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let day = Duration::from_secs(86400);
        // 72h lifetime, 24h target: 48h margin ≥ 12h → rotate at 48h.
        let na = nb + 3 * day;
        assert_eq!(rotation_deadline(nb, na, 0.0, Some(day)), na - day);
        // 30h lifetime, 24h target: 6h margin → half-life rule.
        let na = nb + Duration::from_secs(30 * 3600);
        assert_eq!(
            rotation_deadline(nb, na, 0.0, Some(day)),
            nb + Duration::from_secs(15 * 3600)
        );
    }

    #[test]
    fn expired_svid_always_rotates() {
        let nb = SystemTime::UNIX_EPOCH;
        let na = nb + Duration::from_secs(10);
        let far = nb + Duration::from_secs(100);
        assert!(should_rotate(na, far, na));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs(5);
        let max = Duration::from_secs(480);
        assert_eq!(backoff(s, 0, max), s);
        assert_eq!(backoff(s, 3, max), Duration::from_secs(40));
        assert_eq!(backoff(s, 10, max), max);
        assert_eq!(backoff(s, 100, max), max);
    }
}
