package io.github.lora4j.spark;

/**
 * A {@link LoraSpark#fit} that stopped in the middle: a task failed (beyond Spark's retries), the cluster went away,
 * or a step's gradient was not finite. The network holds the state after the last completed step (its A, B,
 * updater state, iteration and epoch counts), never a half-applied update; {@link #report()} lists the steps that
 * completed. The cause is Spark's exception (or null for a non-finite gradient).
 */
public final class SparkFitException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    /** Not serialised with the exception: a report is for the driver that caught it. */
    private final transient SparkFitReport report;

    SparkFitException(String message, Throwable cause, SparkFitReport report) {
        super(message, cause);
        this.report = report;
    }

    /**
     * The steps that completed before the failure.
     *
     * @return the report of the completed steps (null after Java deserialisation of this exception)
     */
    public SparkFitReport report() {
        return report;
    }
}
