package io.github.lora4j.benchmarks;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import java.util.concurrent.TimeUnit;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Merge and unmerge of one adapter into {@code W [out, in]}, float32, by {@code mode}:
 * <ul>
 *   <li>{@code EXACT}: {@code LoraLinear.merge(MergeMode.EXACT)} / {@code unmerge()} (bit-exact round trip);</li>
 *   <li>{@code FAST}: {@code LoraLinear.merge(MergeMode.FAST)} / {@code unmerge()} (one gemm each);</li>
 *   <li>{@code GEMM}: the reference, {@code Nd4j.gemm(B, A, W, false, false, s, 1)} and the same with {@code -s}:
 *       one {@code [out, r] × [r, in]} gemm accumulated into {@code W}.</li>
 * </ul>
 * Each measured call needs the opposite state first, so an invocation-level setup (unmerge benchmark) or
 * tear-down (merge benchmark) restores it outside the timed region; these calls take milliseconds, far above
 * JMH's per-invocation timing overhead.
 *
 * <p>Shapes as {@link ForwardBenchmark} ({@code -p in=... -p out=...}). Settings: sample time, 1 fork,
 * 3 × 1 s warm-up, 5 × 1 s measurement.
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"-Xms1g", "-Xmx2g"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class MergeBenchmark {

    /** A layer with a realistic adapter, and what merge/unmerge mean for {@link #mode}. */
    @State(Scope.Thread)
    public abstract static class Layer {
        /** Input features (columns of W). */
        @Param({"1024", "4096"})
        public int in;
        /** Output features (rows of W). */
        @Param({"1024", "4096"})
        public int out;
        /** LoRA rank r. */
        @Param({"8", "64"})
        public int rank;
        /** EXACT, FAST (LoraLinear) or GEMM (the reference gemm). */
        @Param({"EXACT", "FAST", "GEMM"})
        public String mode;

        LoraLinear layer;
        INDArray w;
        INDArray a;
        INDArray b;
        double s;

        /** Builds the layer once per trial. */
        @Setup(Level.Trial)
        public void setUpLayer() {
            w = Fixtures.weight(out, in, 1);
            layer = Fixtures.layer(w, rank, 3);
            LoraAdapter adapter = layer.adapter(LoraLinear.DEFAULT_ADAPTER);
            a = adapter.a();
            b = adapter.b();
            s = adapter.scaling();
        }

        void doMerge() {
            switch (mode) {
                case "EXACT" -> layer.merge(MergeMode.EXACT);
                case "FAST" -> layer.merge(MergeMode.FAST);
                case "GEMM" -> Nd4j.gemm(b, a, w, false, false, s, 1.0);
                default -> throw new IllegalArgumentException("mode: expected EXACT, FAST or GEMM, got " + mode);
            }
        }

        void doUnmerge() {
            if (mode.equals("GEMM")) {
                Nd4j.gemm(b, a, w, false, false, -s, 1.0);
            } else {
                layer.unmerge();
            }
        }
    }

    /** Unmerged before each invocation of {@link #merge}; the merge is undone after it, untimed. */
    public static class ToMerge extends Layer {
        /** Undoes the measured merge. */
        @TearDown(Level.Invocation)
        public void undo() {
            doUnmerge();
        }
    }

    /** Merged before each invocation of {@link #unmerge}, untimed. */
    public static class ToUnmerge extends Layer {
        /** Prepares the measured unmerge. */
        @Setup(Level.Invocation)
        public void prepare() {
            doMerge();
        }
    }

    /** {@code W += s·B·A} the {@code mode} way. */
    @Benchmark
    public INDArray merge(ToMerge st) {
        st.doMerge();
        return st.w;
    }

    /** {@code W -= s·B·A} the {@code mode} way. */
    @Benchmark
    public INDArray unmerge(ToUnmerge st) {
        st.doUnmerge();
        return st.w;
    }
}
