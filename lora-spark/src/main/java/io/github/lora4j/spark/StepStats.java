package io.github.lora4j.spark;

/**
 * One synchronous step of {@link LoraSpark#fit}: who contributed, the score, the bytes that travelled and where the
 * time went.
 *
 * @param epoch           the network's epoch count during the step
 * @param iteration       the network's iteration count before the step (as DL4J's listeners see it)
 * @param rows            rows in the step's global batch (Σ over partitions)
 * @param tasks           partitions that still had rows, each of which sent one gradient
 * @param score           the score {@code fit} would report for this global batch: mean loss over its rows (or the
 *                        sum, with {@code miniBatch(false)}) plus regularisation, before the update
 * @param bytesBroadcast  payload broadcast for the step: A and B, {@code Σ r·(nIn + nOut)} elements
 * @param bytesAggregated payload of the gradients sent back: {@code tasks ×} the size of A and B
 * @param wallNanos       the whole step on the driver, from broadcast to updated network
 * @param broadcastNanos  creating the step's broadcast on the driver
 * @param jobNanos        the Spark job (scheduling, shipping, the tasks, aggregation), as the driver waits for it
 * @param computeNanos    the longest time one task spent computing its gradient: setting A and B, copying its rows
 *                        into ND4J, the network's forward and backward pass, copying the gradient out
 * @param updateNanos     the driver's update: the network's updater (normalisation, regularisation, e.g. Adam) and
 *                        the parameter step
 */
public record StepStats(int epoch, int iteration, long rows, int tasks, double score, long bytesBroadcast,
        long bytesAggregated, long wallNanos, long broadcastNanos, long jobNanos, long computeNanos,
        long updateNanos) {

    /**
     * Time the job spent outside the slowest task's compute: scheduling, serialising and shipping tasks and
     * results, reading the broadcast, summing the gradients.
     *
     * @return {@code jobNanos - computeNanos}, at least 0
     */
    public long overheadNanos() {
        return Math.max(0, jobNanos - computeNanos);
    }
}
