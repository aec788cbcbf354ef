package io.github.lora4j.benchmarks;

import io.github.lora4j.LoraLinear;
import java.util.concurrent.TimeUnit;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;
import org.openjdk.jmh.infra.Blackhole;

/**
 * A mixed-adapter batch against a single-adapter one, float32, {@value #ROWS} rows:
 * <ul>
 *   <li>{@link #single}: {@code forward(x)} with one unmerged adapter (the baseline);</li>
 *   <li>{@link #mixed}: {@code forward(x, adapterPerRow)} with {@value #ADAPTERS} adapters assigned round-robin
 *       (row i uses adapter i mod 8): rows of different adapters interleaved;</li>
 *   <li>{@link #mixedGrouped}: the same adapters with rows already grouped (8 contiguous blocks), no permutation.</li>
 * </ul>
 * Target (issue 5): {@code mixed / single ≤ 1.3}.
 *
 * <p>Shapes as {@link ForwardBenchmark} ({@code -p in=... -p out=...}). Settings: sample time, 2 forks,
 * 3 × 1 s warm-up, 5 × 1 s measurement.
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 2, jvmArgsAppend = {"-Xms1g", "-Xmx2g"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class MixedBatchBenchmark {

    /** Rows in the batch. */
    public static final int ROWS = 64;
    /** Adapters in the mixed batch. */
    public static final int ADAPTERS = 8;

    /** One layer holding {@value #ADAPTERS} adapters of the same rank. */
    @State(Scope.Thread)
    public static class Batch {
        /** Input features (columns of W). */
        @Param({"1024", "4096"})
        public int in;
        /** Output features (rows of W). */
        @Param({"1024", "4096"})
        public int out;
        /** LoRA rank r of every adapter. */
        @Param({"8"})
        public int rank;

        LoraLinear layer;
        INDArray x;
        String[] roundRobin;
        String[] grouped;

        /** Builds the layer and the row assignments once per trial. */
        @Setup
        public void setUp() {
            layer = Fixtures.layer(Fixtures.weight(out, in, 1), rank, 3);
            String[] names = new String[ADAPTERS];
            names[0] = LoraLinear.DEFAULT_ADAPTER;
            for (int k = 1; k < ADAPTERS; k++) {
                names[k] = "adapter" + k;
                layer.addAdapter(names[k], Fixtures.config(rank));
                Fixtures.addRealisticAdapter(layer, names[k], 3 + 10L * k);
            }
            roundRobin = new String[ROWS];
            grouped = new String[ROWS];
            for (int i = 0; i < ROWS; i++) {
                roundRobin[i] = names[i % ADAPTERS];
                grouped[i] = names[i / (ROWS / ADAPTERS)];
            }
            x = Fixtures.uniform(2, 1.0, ROWS, in);
        }
    }

    /** All rows through the active adapter. */
    @Benchmark
    public void single(Batch s, Blackhole bh) {
        bh.consume(s.layer.forward(s.x));
    }

    /** Rows assigned round-robin to 8 adapters. */
    @Benchmark
    public void mixed(Batch s, Blackhole bh) {
        bh.consume(s.layer.forward(s.x, s.roundRobin));
    }

    /** Rows already grouped by adapter. */
    @Benchmark
    public void mixedGrouped(Batch s, Blackhole bh) {
        bh.consume(s.layer.forward(s.x, s.grouped));
    }
}
