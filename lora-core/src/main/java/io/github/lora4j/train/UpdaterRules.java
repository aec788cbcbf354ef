package io.github.lora4j.train;

import java.util.Set;
import org.nd4j.linalg.learning.config.AMSGrad;
import org.nd4j.linalg.learning.config.AdaBelief;
import org.nd4j.linalg.learning.config.AdaDelta;
import org.nd4j.linalg.learning.config.AdaGrad;
import org.nd4j.linalg.learning.config.AdaMax;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Nadam;
import org.nd4j.linalg.learning.config.Nesterovs;
import org.nd4j.linalg.learning.config.RmsProp;
import org.nd4j.linalg.schedule.ISchedule;

/**
 * What a saved trainer's updater and optimizer state must satisfy to be resumed: the values without which every
 * later step fails (a NaN or infinite learning rate, a division by an epsilon of 0 on LoRA's zero gradients, a
 * bias correction {@code 1 - beta^t} of 0, a negative second moment under a square root). {@code loadState} refuses
 * a file breaking one, and {@code saveState} refuses to write one, naming the value; nothing else about the run is
 * judged (a learning rate of 0 at a warm-up's start is fine).
 */
final class UpdaterRules {

    /** ND4J 1.0.0-M2.1's updater and schedule classes, by exact name: the only classes a file may name. */
    static final Set<String> CLASSES = Set.of(
            "org.nd4j.linalg.learning.config.AdaBelief", "org.nd4j.linalg.learning.config.AdaDelta",
            "org.nd4j.linalg.learning.config.AdaGrad", "org.nd4j.linalg.learning.config.AdaMax",
            "org.nd4j.linalg.learning.config.Adam", "org.nd4j.linalg.learning.config.AMSGrad",
            "org.nd4j.linalg.learning.config.Nadam", "org.nd4j.linalg.learning.config.Nesterovs",
            "org.nd4j.linalg.learning.config.NoOp", "org.nd4j.linalg.learning.config.RmsProp",
            "org.nd4j.linalg.learning.config.Sgd",
            "org.nd4j.linalg.schedule.CycleSchedule", "org.nd4j.linalg.schedule.ExponentialSchedule",
            "org.nd4j.linalg.schedule.FixedSchedule", "org.nd4j.linalg.schedule.InverseSchedule",
            "org.nd4j.linalg.schedule.MapSchedule", "org.nd4j.linalg.schedule.PolySchedule",
            "org.nd4j.linalg.schedule.RampSchedule", "org.nd4j.linalg.schedule.SigmoidSchedule",
            "org.nd4j.linalg.schedule.StepSchedule");

    private UpdaterRules() {
    }

    /**
     * The first hyper-parameter of {@code u} that makes every step from {@code (iteration, epoch)} on fail, named
     * with its value and the range expected, or null if there is none.
     */
    static String problem(IUpdater u, int iteration, int epoch) {
        String name = u.getClass().getSimpleName();
        if (u.hasLearningRate()) {
            double lr = u.getLearningRate(iteration, epoch);
            if (!Double.isFinite(lr) || lr < 0) {
                return name + " learning rate at iteration " + iteration + ", epoch " + epoch + ": expected a finite "
                        + "number >= 0, got " + lr;
            }
        }
        if (u instanceof Adam a) {
            return betasAndEpsilon(name, a.getBeta1(), a.getBeta2(), a.getEpsilon());
        }
        if (u instanceof Nadam a) {
            return betasAndEpsilon(name, a.getBeta1(), a.getBeta2(), a.getEpsilon());
        }
        if (u instanceof AMSGrad a) {
            return betasAndEpsilon(name, a.getBeta1(), a.getBeta2(), a.getEpsilon());
        }
        if (u instanceof AdaMax a) {
            return betasAndEpsilon(name, a.getBeta1(), a.getBeta2(), a.getEpsilon());
        }
        if (u instanceof AdaBelief a) {
            return betasAndEpsilon(name, a.getBeta1(), a.getBeta2(), a.getEpsilon());
        }
        if (u instanceof RmsProp a) {
            String p = inUnitInterval(name, "rmsDecay", a.getRmsDecay());
            return p != null ? p : epsilon(name, a.getEpsilon());
        }
        if (u instanceof AdaDelta a) {
            String p = inUnitInterval(name, "rho", a.getRho());
            return p != null ? p : epsilon(name, a.getEpsilon());
        }
        if (u instanceof AdaGrad a) {
            return epsilon(name, a.getEpsilon());
        }
        if (u instanceof Nesterovs a) {
            ISchedule s = a.getMomentumISchedule();
            double momentum = s != null ? s.valueAt(iteration, epoch) : a.getMomentum();
            if (!Double.isFinite(momentum) || momentum < 0) {
                return name + " momentum at iteration " + iteration + ", epoch " + epoch + ": expected a finite number "
                        + ">= 0, got " + momentum;
            }
        }
        return null;
    }

    private static String betasAndEpsilon(String name, double beta1, double beta2, double epsilon) {
        for (double[] b : new double[][] {{1, beta1}, {2, beta2}}) {
            if (!(b[1] >= 0 && b[1] < 1)) {
                return name + " beta" + (int) b[0] + ": expected a number in [0, 1) (the bias correction 1 - beta^t "
                        + "divides by 0 at 1), got " + b[1];
            }
        }
        return epsilon(name, epsilon);
    }

    private static String inUnitInterval(String name, String field, double v) {
        return v >= 0 && v <= 1 ? null : name + " " + field + ": expected a number in [0, 1], got " + v;
    }

    private static String epsilon(String name, double epsilon) {
        return epsilon > 0 && Double.isFinite(epsilon) ? null : name + " epsilon: expected a finite number > 0 (it "
                + "guards a division: with 0, every zero gradient entry, as LoRA's A gets while B = 0, gives 0/0), got "
                + epsilon;
    }

    /**
     * Which equal parts of one parameter's updater state must be {@code >= 0} (second moments, squared-gradient
     * sums), as {@code [parts, first non-negative part]}: Adam's {@code [m | v]} is {@code {2, 1}}, AdaGrad's
     * {@code [h]} {@code {1, 0}}; {@code {1, 1}} where no part has a sign.
     */
    static int[] nonNegativeParts(IUpdater u) {
        if (u instanceof Adam || u instanceof Nadam || u instanceof AdaMax || u instanceof AdaBelief) {
            return new int[] {2, 1};
        }
        if (u instanceof AMSGrad) {
            return new int[] {3, 1};
        }
        if (u instanceof AdaDelta || u instanceof AdaGrad || u instanceof RmsProp) {
            return new int[] {1, 0};
        }
        return new int[] {1, 1};
    }
}
