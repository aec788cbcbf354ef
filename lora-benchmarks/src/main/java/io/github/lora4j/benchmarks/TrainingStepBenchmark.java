package io.github.lora4j.benchmarks;

import java.util.concurrent.TimeUnit;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
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
 * <p>Shapes as {@link ForwardBenchmark} ({@code -p in=... -p out=...}). Settings: sample time, 1 fork,
 * 3 × 1 s warm-up, 5 × 1 s measurement.
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"-Xms1g", "-Xmx2g"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class TrainingStepBenchmark {

    /**
     * The unmerged forward's layer and input (same parameters, set up first by JMH), switched to training mode, plus
     * an upstream gradient.
     */
    @State(Scope.Thread)
    public static class Step extends ForwardBenchmark.Unmerged {
        INDArray gradOutput;

        /** Adds training mode and the gradient once per trial. */
        @Setup
        public void setUpTraining() {
            layer.train();
            gradOutput = Fixtures.gaussian(4, batch, out);
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
