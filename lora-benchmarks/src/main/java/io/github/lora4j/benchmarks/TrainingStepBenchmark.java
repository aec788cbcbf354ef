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
 * One training step of an unmerged layer, float32: {@code forward} (training mode, no dropout), {@code backward}
 * (gradients of A and B and {@code dL/dx}) and {@code zeroGrad}. The optimizer update is not included. By the
 * cost model a step is about two base gemms ({@code x W^T} and {@code g W}) plus the thin LoRA gemms.
 *
 * <p>Settings as {@link ForwardBenchmark}: sample time, 1 fork, 3 × 1 s warm-up, 5 × 1 s measurement.
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"-Xms1g", "-Xmx2g"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class TrainingStepBenchmark {

    /** A layer in training mode, its input and an upstream gradient. */
    @State(Scope.Thread)
    public static class Step {
        /** in = out. */
        @Param({"1024", "4096"})
        public int size;
        /** LoRA rank r. */
        @Param({"8", "64"})
        public int rank;
        /** Rows n of the input. */
        @Param({"1", "8", "64", "512"})
        public int batch;

        LoraLinear layer;
        INDArray x;
        INDArray gradOutput;

        /** Builds the layer once per trial. */
        @Setup
        public void setUp() {
            layer = Fixtures.layer(Fixtures.weight(size, 1), rank, 3).train();
            x = Fixtures.uniform(2, 1.0, batch, size);
            gradOutput = Fixtures.gaussian(4, batch, size);
        }
    }

    /** forward + backward + zeroGrad. */
    @Benchmark
    public void step(Step s, Blackhole bh) {
        bh.consume(s.layer.forward(s.x));
        bh.consume(s.layer.backward(s.gradOutput));
        s.layer.zeroGrad();
    }
}
