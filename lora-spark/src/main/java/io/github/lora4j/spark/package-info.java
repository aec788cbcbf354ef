/**
 * LoRA fine-tuning of DL4J networks on Apache Spark: {@link io.github.lora4j.spark.LoraSpark#fit} trains the
 * adapters of a network made by {@code LoraDl4j.apply} by synchronous data parallelism, broadcasting only
 * {@code A} and {@code B} each step and summing their gradients with {@code treeAggregate};
 * {@link io.github.lora4j.spark.LoraSpark#output} runs the merged network on an RDD of features.
 * Spark is a {@code provided} dependency: spark-submit supplies it.
 */
package io.github.lora4j.spark;
