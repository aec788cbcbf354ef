package io.github.lora4j.spark;

import org.apache.spark.Partitioner;

/** Sends the record keyed {@code i} to partition {@code i}: a shuffle that keeps every row in its partition. */
final class IndexPartitioner extends Partitioner {

    private static final long serialVersionUID = 1L;

    private final int partitions;

    IndexPartitioner(int partitions) {
        this.partitions = partitions;
    }

    @Override
    public int numPartitions() {
        return partitions;
    }

    @Override
    public int getPartition(Object key) {
        return (Integer) key;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof IndexPartitioner p && p.partitions == partitions;
    }

    @Override
    public int hashCode() {
        return partitions;
    }
}
