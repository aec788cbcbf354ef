package io.github.lora4j.benchmarks;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Deterministic float32 arrays and layers for the benchmarks, at a realistic scale: {@code W} like a freshly
 * initialised {@code nn.Linear} ({@code U(±1/sqrt(in))}), {@code A} like PEFT's init, and {@code B} scaled so
 * that the update of a trained adapter is {@link #RELATIVE_UPDATE} of {@code W}:
 * {@code ‖s·B·A‖_F = 0.01·‖W‖_F}. Only the exact merge's memory depends on that scale; timings do not.
 */
public final class Fixtures {

    /** {@code ‖s·B·A‖_F / ‖W‖_F} of the benchmark adapters: a trained adapter's typical size. */
    public static final double RELATIVE_UPDATE = 0.01;

    private Fixtures() {
    }

    /** {@code U(-bound, bound)} of the given shape, c-order float32, from {@code seed}. */
    public static INDArray uniform(long seed, double bound, long... shape) {
        Nd4j.getRandom().setSeed(seed);
        INDArray u = Nd4j.rand(DataType.FLOAT, shape);
        return u.muli(2 * bound).subi(bound);
    }

    /** {@code N(0, 1)} of the given shape, c-order float32, from {@code seed}. */
    public static INDArray gaussian(long seed, long... shape) {
        Nd4j.getRandom().setSeed(seed);
        return Nd4j.randn(DataType.FLOAT, shape);
    }

    /** A frozen weight {@code [size, size]}, {@code U(±1/sqrt(size))}. */
    public static INDArray weight(int size, long seed) {
        return weight(size, size, seed);
    }

    /** A frozen weight {@code [out, in]}, {@code U(±1/sqrt(in))} like a fresh {@code nn.Linear(in, out)}. */
    public static INDArray weight(long out, long in, long seed) {
        return uniform(seed, 1.0 / Math.sqrt(in), out, in);
    }

    /** Configuration of rank {@code r} with {@code alpha = 2r} (scaling 2, as PEFT's common r = 8, alpha = 16). */
    public static LoraConfig config(int rank) {
        return LoraConfig.builder().rank(rank).alpha(2.0 * rank).init(LoraInit.ZERO).build();
    }

    /**
     * Wraps {@code w} (no bias) with a default adapter of rank {@code rank} whose update has the
     * {@link #RELATIVE_UPDATE realistic size}; the layer is in eval mode and unmerged.
     */
    public static LoraLinear layer(INDArray w, int rank, long seed) {
        LoraLinear layer = LoraLinear.wrap(w, null, config(rank));
        addRealisticAdapter(layer, LoraLinear.DEFAULT_ADAPTER, seed);
        return layer;
    }

    /** Sets adapter {@code name} of {@code layer} to realistic A and B (see the class comment). */
    public static void addRealisticAdapter(LoraLinear layer, String name, long seed) {
        int r = layer.adapter(name).rank();
        double s = layer.adapter(name).scaling();
        long in = layer.inFeatures();
        long out = layer.outFeatures();
        INDArray a = uniform(seed, 1.0 / Math.sqrt(in), r, in);
        INDArray b = gaussian(seed + 1, out, r);
        double target = RELATIVE_UPDATE * layer.weight().norm2Number().doubleValue();
        double current = s * frobeniusOfProduct(b, a);
        b.muli(target / current);
        layer.setAdapterWeights(name, a, b);
    }

    /**
     * The arrays of one side-by-side grid cell {@code (d, r, n)}, all derived from {@code seed}: {@code SideBySide}
     * times them, and the probes that re-measure a cell build the same ones.
     *
     * @param d    W is {@code [d, d]}, {@code U(±1/sqrt(d))} from {@code seed}
     * @param r    the adapter's rank
     * @param seed {@code d·1000 + r·10 + n}
     * @param bias {@code [d]}, {@code U(±1/sqrt(d))}, shared by the cell's layers
     * @param x    the input {@code [n, d]}, {@code N(0, 1)}
     * @param g    the output gradient of a training step {@code [n, d]}, {@code N(0, 1)}
     */
    public record GridCell(int d, int r, long seed, INDArray bias, INDArray x, INDArray g) {

        /** The cell's W (a fresh copy) with the bias and a realistic default adapter; eval mode, unmerged. */
        public LoraLinear layer() {
            LoraLinear layer = LoraLinear.wrap(weight(d, seed), bias, config(r));
            addRealisticAdapter(layer, LoraLinear.DEFAULT_ADAPTER, seed + 4);
            return layer;
        }

        /** The cell's W (a fresh copy) with the bias and no adapter: the plain dense layer. */
        public LoraLinear plain() {
            return LoraLinear.base(weight(d, seed), bias, WeightLayout.OUT_IN);
        }
    }

    /** The side-by-side grid's arrays for {@code W [d, d]}, rank {@code r}, batch {@code n}. */
    public static GridCell gridCell(int d, int r, int n) {
        long seed = d * 1000L + r * 10L + n;
        return new GridCell(d, r, seed, uniform(seed + 1, 1.0 / Math.sqrt(d), d), gaussian(seed + 2, n, d),
                gaussian(seed + 3, n, d));
    }

    /** {@code ‖B·A‖_F} from the small Gram matrices: {@code ‖BA‖² = Σ (BᵀB) ∘ (AAᵀ)}; no {@code [out, in]} array. */
    static double frobeniusOfProduct(INDArray b, INDArray a) {
        long r = a.rows();
        INDArray gb = Nd4j.createUninitialized(a.dataType(), r, r);
        INDArray ga = Nd4j.createUninitialized(a.dataType(), r, r);
        Nd4j.gemm(b, b, gb, true, false, 1.0, 0.0);
        Nd4j.gemm(a, a, ga, false, true, 1.0, 0.0);
        return Math.sqrt(gb.castTo(DataType.DOUBLE).muli(ga.castTo(DataType.DOUBLE)).sumNumber().doubleValue());
    }
}
