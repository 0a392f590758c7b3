//! Learning-rate schedules, evaluated per optimizer step.

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Constant,
    /// Linear warm-up from 0, then a cosine decay to `final_ratio * lr`.
    Cosine { warmup_steps: u64, total_steps: u64, final_ratio: f64 },
    /// One-cycle: linear rise from lr/25 to lr over `rise` of the steps, then cosine down to lr/1e4.
    OneCycle { total_steps: u64, rise: f64 },
}

impl Schedule {
    pub fn parse(name: &str, total_steps: u64, warmup_steps: u64) -> Result<Schedule> {
        let total_steps = total_steps.max(1);
        match name {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine { warmup_steps: warmup_steps.min(total_steps), total_steps, final_ratio: 0.0 }),
            "one_cycle" | "onecycle" => Ok(Schedule::OneCycle { total_steps, rise: 0.3 }),
            other => Err(Error::invalid(format!(
                "unknown lr_schedule {other:?}; use \"constant\", \"cosine\" or \"one_cycle\""
            ))),
        }
    }

    /// The same schedule laid out over `total_steps` instead: a run whose
    /// length is fixed only once it has started (a time budget) resizes it.
    pub fn with_total_steps(self, total_steps: u64) -> Schedule {
        let total_steps = total_steps.max(1);
        match self {
            Schedule::Constant => Schedule::Constant,
            Schedule::Cosine { warmup_steps, final_ratio, .. } => Schedule::Cosine { warmup_steps: warmup_steps.min(total_steps), total_steps, final_ratio },
            Schedule::OneCycle { rise, .. } => Schedule::OneCycle { total_steps, rise },
        }
    }

    /// The learning rate at optimizer step `step` (0-based) for base rate `lr`.
    pub fn at(&self, lr: f64, step: u64) -> f64 {
        let cosine = |progress: f64, from: f64, to: f64| to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * progress.clamp(0.0, 1.0)).cos());
        match *self {
            Schedule::Constant => lr,
            Schedule::Cosine { warmup_steps, total_steps, final_ratio } => {
                if step < warmup_steps {
                    lr * (step + 1) as f64 / warmup_steps as f64
                } else {
                    let span = (total_steps - warmup_steps).max(1) as f64;
                    cosine((step - warmup_steps) as f64 / span, lr, lr * final_ratio)
                }
            }
            Schedule::OneCycle { total_steps, rise } => {
                let peak_step = ((total_steps as f64) * rise).max(1.0);
                let s = step as f64;
                if s < peak_step {
                    lr / 25.0 + (lr - lr / 25.0) * s / peak_step
                } else {
                    cosine((s - peak_step) / (total_steps as f64 - peak_step).max(1.0), lr, lr / 1e4)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_then_decays_to_zero() {
        let s = Schedule::parse("cosine", 100, 10).unwrap();
        assert!((s.at(1.0, 0) - 0.1).abs() < 1e-12);
        assert!((s.at(1.0, 9) - 1.0).abs() < 1e-12);
        assert!((s.at(1.0, 55) - 0.5).abs() < 1e-9);
        assert!(s.at(1.0, 100) < 1e-12);
        let values: Vec<f64> = (10..100).map(|t| s.at(1.0, t)).collect();
        assert!(values.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn resizing_is_the_schedule_planned_with_that_length() {
        let long = Schedule::parse("cosine", 1000, 10).unwrap();
        let planned = Schedule::parse("cosine", 100, 10).unwrap();
        assert_eq!(long.with_total_steps(100), planned);
        // Warm-up steps are kept; a total shorter than them clamps as parse does.
        assert_eq!(long.with_total_steps(5), Schedule::parse("cosine", 5, 10).unwrap());
        assert_eq!(Schedule::parse("one_cycle", 7, 0).unwrap().with_total_steps(50), Schedule::parse("one_cycle", 50, 0).unwrap());
        assert_eq!(Schedule::Constant.with_total_steps(3), Schedule::Constant);
    }

    #[test]
    fn one_cycle_rises_then_falls() {
        let s = Schedule::parse("one_cycle", 100, 0).unwrap();
        assert!((s.at(1.0, 0) - 0.04).abs() < 1e-12);
        assert!((s.at(1.0, 30) - 1.0).abs() < 1e-9);
        assert!(s.at(1.0, 99) < 0.01);
        assert_eq!(Schedule::parse("constant", 5, 0).unwrap().at(0.3, 4), 0.3);
        assert!(Schedule::parse("step", 5, 0).is_err());
    }
}
