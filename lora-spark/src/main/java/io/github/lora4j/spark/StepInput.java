package io.github.lora4j.spark;

import com.esotericsoftware.kryo.DefaultSerializer;
import com.esotericsoftware.kryo.serializers.JavaSerializer;
import java.io.Serializable;

/**
 * What the driver broadcasts for one step: the adapter ({@code A} and {@code B} of every LoRA layer, as
 * {@link AdapterLayout} lays them out) and the counters the network's layers see.
 *
 * @param step      index of the step within the epoch: each partition contributes its batch {@code step}
 * @param iteration the network's iteration count before the step
 * @param epoch     the network's epoch count
 * @param adapter   {@code Σ r·(nIn + nOut)} values
 *
 * <p>Java-serialised under Kryo too: Kryo 4's field serialiser (Spark's) cannot build records.
 */
@DefaultSerializer(JavaSerializer.class)
record StepInput(int step, int iteration, int epoch, FlatVector adapter) implements Serializable {
}
