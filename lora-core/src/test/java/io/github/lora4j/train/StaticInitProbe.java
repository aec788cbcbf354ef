package io.github.lora4j.train;

/**
 * A class whose static initialiser records that it ran: {@link TrainerStateRegressionTest} names it in a trainer
 * state file, which must be refused without loading it.
 */
final class StaticInitProbe {

    static {
        Tripwire.tripped = true;
    }

    private StaticInitProbe() {
    }

    /** Holds the flag in a class of its own, so reading it does not initialise the probe. */
    static final class Tripwire {
        static volatile boolean tripped;

        private Tripwire() {
        }
    }
}
