package io.github.lora4j.benchmarks;

import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import java.util.concurrent.TimeUnit;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
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
 * Forward cost of a dense layer {@code [n, in] → [n, out]} with {@code W [out, in]}, float32:
 * <ul>
 *   <li>{@link #plain}: {@code Nd4j.gemm(x, W, y, false, true, 1, 0)} into a preallocated {@code y}: the floor;</li>
 *   <li>{@link #plainAllocating}: the same gemm into a freshly allocated {@code y}, as {@link LoraLinear#forward}
 *       does: the fair baseline for the layer;</li>
 *   <li>{@link #merged}: {@code LoraLinear.forward} with the adapter merged into {@code W} (one gemm);</li>
 *   <li>{@link #unmerged}: {@code LoraLinear.forward} with the adapter kept apart (one gemm plus two thin ones).</li>
 * </ul>
 * The merged layer's cost does not depend on the rank, so it is measured once per shape and batch.
 *
 * <p>Shapes: {@code in} and {@code out} are separate parameters, so {@code -p in=4096 -p out=11008} measures a
 * non-square layer (LLaMA-7B's up_proj). Their default lists give the product {@code {1024, 4096}²};
 * {@code BenchmarkReport} runs the square shapes unless {@code --shape} says otherwise.
 *
 * <p>Settings (the "full" profile; {@code BenchmarkReport --profile quick} shortens them): sample-time mode
 * (every invocation timed, so the report takes true medians), 2 forks (so that run-to-run variance shows),
 * 3 warm-up iterations of 1 s, 5 measurement iterations of 1 s. ND4J's own threads do the parallel work; JMH runs one benchmark thread.
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 2, jvmArgsAppend = {"-Xms1g", "-Xmx2g"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class ForwardBenchmark {

    /** Input and preallocated output of the plain dense layer. */
    @State(Scope.Thread)
    public static class Plain {
        /** Input features (columns of W). */
        @Param({"1024", "4096"})
        public int in;
        /** Output features (rows of W). */
        @Param({"1024", "4096"})
        public int out;
        /** Rows n of the input. */
        @Param({"1", "8", "64", "512"})
        public int batch;

        INDArray w;
        INDArray x;
        INDArray y;

        /** Builds W, x and y once per trial. */
        @Setup
        public void setUp() {
            w = Fixtures.weight(out, in, 1);
            x = Fixtures.uniform(2, 1.0, batch, in);
            y = Nd4j.createUninitialized(DataType.FLOAT, batch, out);
        }
    }

    /** A layer with its adapter merged (exactly) into W. */
    @State(Scope.Thread)
    public static class Merged {
        /** Input features (columns of W). */
        @Param({"1024", "4096"})
        public int in;
        /** Output features (rows of W). */
        @Param({"1024", "4096"})
        public int out;
        /** Rows n of the input. */
        @Param({"1", "8", "64", "512"})
        public int batch;

        LoraLinear layer;
        INDArray x;

        /** Builds and merges the layer once per trial. */
        @Setup
        public void setUp() {
            layer = Fixtures.layer(Fixtures.weight(out, in, 1), 8, 3);
            layer.merge(MergeMode.EXACT);
            x = Fixtures.uniform(2, 1.0, batch, in);
        }
    }

    /** A layer whose adapter stays unmerged. */
    @State(Scope.Thread)
    public static class Unmerged {
        /** Input features (columns of W). */
        @Param({"1024", "4096"})
        public int in;
        /** Output features (rows of W). */
        @Param({"1024", "4096"})
        public int out;
        /** LoRA rank r. */
        @Param({"8", "64"})
        public int rank;
        /** Rows n of the input. */
        @Param({"1", "8", "64", "512"})
        public int batch;

        LoraLinear layer;
        INDArray x;

        /** Builds the layer once per trial. */
        @Setup
        public void setUp() {
            layer = Fixtures.layer(Fixtures.weight(out, in, 1), rank, 3);
            x = Fixtures.uniform(2, 1.0, batch, in);
        }
    }

    /** One gemm into a preallocated output. */
    @Benchmark
    public INDArray plain(Plain s) {
        return Nd4j.gemm(s.x, s.w, s.y, false, true, 1.0, 0.0);
    }

    /** One gemm into a new output, allocated as {@code LoraLinear.forward} allocates its result. */
    @Benchmark
    public INDArray plainAllocating(Plain s) {
        INDArray y = Nd4j.createUninitialized(DataType.FLOAT, s.batch, s.out);
        return Nd4j.gemm(s.x, s.w, y, false, true, 1.0, 0.0);
    }

    /** {@code LoraLinear.forward} with the adapter merged. */
    @Benchmark
    public void merged(Merged s, Blackhole bh) {
        bh.consume(s.layer.forward(s.x));
    }

    /** {@code LoraLinear.forward} with the adapter unmerged. */
    @Benchmark
    public void unmerged(Unmerged s, Blackhole bh) {
        bh.consume(s.layer.forward(s.x));
    }
}
