package io.github.lora4j.spark;

import com.esotericsoftware.kryo.DefaultSerializer;
import com.esotericsoftware.kryo.serializers.JavaSerializer;
import java.io.Serializable;
import java.util.List;

/**
 * One partition's training data cut into steps: batch {@code t} holds the partition's rows
 * {@code [t·b, (t+1)·b)}. The single element of each partition of the prepared (persisted) RDD, so step {@code t}
 * finds its batch without walking the ones before it.
 *
 * @param partition the partition's index
 * @param batches   the batches in step order; the last may be shorter
 * @param rows      all rows of the partition
 *
 * <p>Java-serialised under Kryo too: Kryo 4's field serialiser (Spark's) cannot build records.
 */
@DefaultSerializer(JavaSerializer.class)
record PartitionBatches(int partition, List<Batch> batches, long rows) implements Serializable {
}
