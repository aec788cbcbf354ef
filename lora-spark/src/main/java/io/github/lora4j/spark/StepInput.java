package io.github.lora4j.spark;

import java.io.Serializable;

/**
 * What the driver broadcasts for one step: the adapter ({@code A} and {@code B} of every LoRA layer, as
 * {@link AdapterLayout} lays them out) and the counters the network's layers see.
 *
 * @param step      index of the step within the epoch: each partition contributes its batch {@code step}
 * @param iteration the network's iteration count before the step
 * @param epoch     the network's epoch count
 * @param adapter   {@code Σ r·(nIn + nOut)} values
 */
record StepInput(int step, int iteration, int epoch, FlatVector adapter) implements Serializable {
}
