package io.github.lora4j.spark;

import java.util.Arrays;
import java.util.List;

/**
 * What one {@link LoraSpark#fit} did: its steps, and the communication arithmetic beside what full fine-tuning of
 * the same network would move.
 *
 * @param epochs                 epochs run (or begun, in a {@link SparkFitException}'s report)
 * @param partitions             partitions of the data
 * @param batchSizePerWorker     rows each partition contributes per step
 * @param trainableParameters    {@code Σ r·(nIn + nOut)} over the LoRA layers: what travels each step
 * @param networkParameters      all parameters of the network as it was given, adapters included (full
 *                               fine-tuning would move the base ones, {@code networkParameters - trainableParameters})
 * @param elementBytes           4 (FLOAT) or 8 (DOUBLE)
 * @param networkBroadcastBytes  the network broadcast once per fit: parameters and JSON configuration
 * @param inputReshuffled        whether the input's partitions carried their rows (a parallelised collection) and
 *                               were therefore shuffled once, in place, so that no step ships them again
 * @param steps                  one entry per completed step, in order
 */
public record SparkFitReport(int epochs, int partitions, int batchSizePerWorker, long trainableParameters,
        long networkParameters, int elementBytes, long networkBroadcastBytes, boolean inputReshuffled,
        List<StepStats> steps) {

    /**
     * Copies {@code steps}.
     *
     * @param epochs                epochs
     * @param partitions            partitions
     * @param batchSizePerWorker    rows per partition and step
     * @param trainableParameters   adapter parameters
     * @param networkParameters     all parameters
     * @param elementBytes          bytes per element
     * @param networkBroadcastBytes bytes of the network broadcast
     * @param inputReshuffled       whether the input was shuffled once, in place
     * @param steps                 the steps
     */
    public SparkFitReport {
        steps = List.copyOf(steps);
    }

    /**
     * Completed steps.
     *
     * @return {@code steps().size()}
     */
    public int stepCount() {
        return steps.size();
    }

    /**
     * Rows trained on, over all steps and epochs.
     *
     * @return Σ rows of the steps
     */
    public long examples() {
        return steps.stream().mapToLong(StepStats::rows).sum();
    }

    /**
     * The score of each step, in order.
     *
     * @return a new array, one score per step
     */
    public double[] scores() {
        return steps.stream().mapToDouble(StepStats::score).toArray();
    }

    /**
     * Bytes broadcast per step: A and B of every LoRA layer.
     *
     * @return {@code trainableParameters × elementBytes}
     */
    public long bytesBroadcastPerStep() {
        return trainableParameters * elementBytes;
    }

    /**
     * Bytes of the gradient each contributing partition sends back per step (summed pairwise on the way by
     * {@code treeAggregate}).
     *
     * @return {@code trainableParameters × elementBytes}
     */
    public long bytesAggregatedPerTask() {
        return trainableParameters * elementBytes;
    }

    /**
     * What full fine-tuning would broadcast per step, and each partition send back: every base parameter.
     *
     * @return {@code (networkParameters - trainableParameters) × elementBytes}
     */
    public long fullFineTuneBytesPerStep() {
        return (networkParameters - trainableParameters) * elementBytes;
    }

    /**
     * The share of full fine-tuning's traffic that LoRA moves per step.
     *
     * @return {@code bytesBroadcastPerStep / fullFineTuneBytesPerStep}
     */
    public double trafficRatio() {
        return (double) bytesBroadcastPerStep() / fullFineTuneBytesPerStep();
    }

    /**
     * Median wall time of a step.
     *
     * @return milliseconds, NaN without steps
     */
    public double medianStepMillis() {
        return median(steps.stream().mapToLong(StepStats::wallNanos).toArray()) / 1e6;
    }

    static double median(long[] values) {
        if (values.length == 0) {
            return Double.NaN;
        }
        long[] v = values.clone();
        Arrays.sort(v);
        return v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2.0;
    }
}
