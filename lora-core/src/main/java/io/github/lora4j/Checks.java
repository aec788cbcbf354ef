package io.github.lora4j;

import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.util.Arrays;
import java.util.Collection;
import java.util.Objects;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** The layer's argument checks and refusals, each naming what was expected and what came. */
final class Checks {

    private Checks() {
    }

    /** The one wording of a refusal while an adapter is merged: "X is refused while adapter 'a' is merged into W". */
    static IllegalStateException mergedRefusal(String action, String adapterName) {
        return new IllegalStateException(action + " is refused while adapter '" + adapterName
                + "' is merged into W; unmerge() first");
    }

    /** Throws an {@link IllegalStateException} with {@code message} when {@code refused} holds. */
    static void refuseIf(boolean refused, String message) {
        if (refused) {
            throw new IllegalStateException(message);
        }
    }

    /**
     * Refuses a mixed-adapter batch that names a DoRA adapter, as PEFT does ("Cannot pass `adapter_names` when DoRA is
     * enabled"): DoRA rescales whole output columns by the adapter's own {@code m / ‖W + s·B·A‖}, which the shared
     * base product of a mixed batch cannot carry.
     */
    static void refuseDoraRows(String[] adapterPerRow, AdapterSet adapters) {
        for (int i = 0; i < adapterPerRow.length; i++) {
            LoraAdapter a = adapterPerRow[i] == null ? null : adapters.get(adapterPerRow[i]);
            if (a != null && a.isDora()) {
                throw new IllegalArgumentException("adapterPerRow[" + i + "]: adapter '" + a.name() + "' is DoRA, and "
                        + "mixed-adapter batches do not support DoRA adapters (PEFT refuses them too); expected plain "
                        + "LoRA adapters, null or " + LoraLinear.BASE_MODEL + ". Run its rows through forward(x) with it "
                        + "active");
            }
        }
    }

    static void checkName(String name) {
        Objects.requireNonNull(name, "adapter name must not be null");
        if (name.isBlank()) {
            throw new IllegalArgumentException("adapter name must not be blank, got '" + name + "'");
        }
        if (name.equals(LoraLinear.BASE_MODEL)) {
            throw new IllegalArgumentException("adapter name '" + LoraLinear.BASE_MODEL + "' is reserved for the base layer");
        }
    }

    /** Name, rank and scaling of an adapter to add. */
    static void checkNewAdapter(String name, LoraConfig config, long in, long out, DataType type) {
        checkName(name);
        Objects.requireNonNull(config, "config must not be null");
        checkRank(config.rank());
        checkScaling(config, type);
    }

    /**
     * A rank must be at least 1. Ranks above {@code min(in, out)} are legal, as in PEFT: {@code B·A} then has rank at
     * most {@code min(in, out)} and the adapter trains more parameters than it needs (see {@link LoraMath#savings}).
     */
    static void checkRank(int r) {
        if (r < 1) {
            throw new IllegalArgumentException("rank must be >= 1, got " + r);
        }
    }

    /**
     * The scaling {@code s} must be a finite value of the layer's data type: an {@code alpha} of 1e39 on a FLOAT layer
     * makes {@code s} infinite, and even a fresh adapter ({@code B = 0}) would then output NaN ({@code ∞·0}).
     */
    static void checkScaling(LoraConfig config, DataType type) {
        double s = config.scaling();
        double max = type == DataType.DOUBLE ? Double.MAX_VALUE : Float.MAX_VALUE;
        if (!(Math.abs(s) <= max)) {
            throw new IllegalArgumentException("scaling s = alpha / " + (config.rsLora() ? "sqrt(r)" : "r") + " = "
                    + s + " (alpha = " + config.alpha() + ", r = " + config.rank() + ") is not a finite " + type
                    + " value; choose a smaller alpha");
        }
    }

    static void checkInput(INDArray input, DataType type, long in) {
        Objects.requireNonNull(input, "input must not be null");
        if (input.dataType() != type) {
            throw new IllegalArgumentException("input data type: expected " + type + " (the weight's), got "
                    + input.dataType() + "; convert explicitly with input.castTo(DataType." + type + ")");
        }
        if (input.rank() < 1 || input.size(-1) != in) {
            throw new IllegalArgumentException("input shape: expected [..., " + in + "] (last dimension = in), got "
                    + Arrays.toString(input.shape()));
        }
    }

    static void checkArray(String what, INDArray array, long[] shape, DataType type) {
        if (array.dataType() != type) {
            throw new IllegalArgumentException(what + ": expected data type " + type + ", got " + array.dataType());
        }
        if (!Arrays.equals(array.shape(), shape)) {
            throw new IllegalArgumentException(what + ": expected shape " + Arrays.toString(shape) + ", got "
                    + Arrays.toString(array.shape()));
        }
        checkFinite(what, array);
    }

    static void checkWeight(INDArray weight, WeightLayout layout) {
        Objects.requireNonNull(weight, "weight must not be null");
        String expected = layout == WeightLayout.OUT_IN ? "[out, in]" : "[in, out]";
        if (weight.rank() != 2 || weight.rows() < 1 || weight.columns() < 1) {
            throw new IllegalArgumentException("weight: expected a non-empty matrix " + expected + ", got shape "
                    + Arrays.toString(weight.shape()));
        }
        if (weight.dataType() != DataType.FLOAT && weight.dataType() != DataType.DOUBLE) {
            throw new IllegalArgumentException("weight: expected data type FLOAT or DOUBLE, got " + weight.dataType());
        }
        checkFinite("weight", weight);
    }

    static void checkBias(INDArray bias, INDArray weight, long out) {
        if (bias == null) {
            return;
        }
        if (bias.dataType() != weight.dataType()) {
            throw new IllegalArgumentException("bias: expected data type " + weight.dataType() + " (the weight's), got "
                    + bias.dataType());
        }
        boolean vector = bias.rank() == 1 || (bias.rank() == 2 && bias.rows() == 1);
        if (!vector || bias.length() != out) {
            throw new IllegalArgumentException("bias: expected shape [" + out + "] (out), got "
                    + Arrays.toString(bias.shape()));
        }
        checkFinite("bias", bias);
    }

    static void checkFinite(String what, INDArray array) {
        if (Double.isNaN(maxAbsOrNaN(array))) {
            throw new IllegalArgumentException(what + ": expected finite values, found NaN or infinity");
        }
    }

    /** The output of {@code forwardInto}: {@code [n, out]} for an {@code [n, in]} input, c-order, not a view. */
    static void checkOutput(INDArray input, INDArray output, long out, DataType type) {
        Objects.requireNonNull(output, "output must not be null");
        if (input.rank() != 2) {
            throw new IllegalArgumentException("input shape: expected [n, " + input.size(-1) + "], got "
                    + Arrays.toString(input.shape()));
        }
        long[] expected = {input.rows(), out};
        if (output.dataType() != type || !Arrays.equals(output.shape(), expected) || output.ordering() != 'c'
                || output.isView()) {
            throw new IllegalArgumentException("output: expected a c-order, contiguous " + type + " array of shape "
                    + Arrays.toString(expected) + ", got " + output.dataType() + " " + Arrays.toString(output.shape())
                    + " in order '" + output.ordering() + "'" + (output.isView() ? " (a view)" : ""));
        }
    }

    /** {@link #checkNoOverlap} against everything a layer reads while writing {@code output}. */
    static void checkNoOverlaps(INDArray output, INDArray input, INDArray weight, INDArray bias,
                                Collection<LoraAdapter> adapters) {
        checkNoOverlap(output, input, "the input");
        checkNoOverlap(output, weight, "W");
        checkNoOverlap(output, bias, "the bias");
        for (LoraAdapter a : adapters) {
            checkNoOverlap(output, a.a(), "A of adapter '" + a.name() + "'");
            checkNoOverlap(output, a.b(), "B of adapter '" + a.name() + "'");
        }
    }

    static void checkGradOutput(INDArray gradOutput, long[] outputShape, DataType type) {
        if (gradOutput.dataType() != type) {
            throw new IllegalArgumentException("gradOutput data type: expected " + type + ", got "
                    + gradOutput.dataType());
        }
        if (!Arrays.equals(gradOutput.shape(), outputShape)) {
            throw new IllegalArgumentException("gradOutput shape: expected " + Arrays.toString(outputShape)
                    + " (the forward output's), got " + Arrays.toString(gradOutput.shape()));
        }
    }

    /**
     * Refuses an {@code output} whose memory overlaps {@code other}'s ({@link SharedMemory}'s rule): writing it would
     * corrupt that array (the frozen W, a bias, an adapter's A or B) or read a half-written input.
     */
    static void checkNoOverlap(INDArray output, INDArray other, String what) {
        if (SharedMemory.overlap(output, other)) {
            throw new IllegalArgumentException("output must not share memory with " + what + " (output occupies bytes "
                    + SharedMemory.span(output) + ", " + what + " " + SharedMemory.span(other)
                    + "); pass a separate array");
        }
    }

    /**
     * {@code max |x|} over a small array, or NaN if any element is NaN or infinite: one Java pass, because the four
     * ND4J ops of a finiteness check plus an amax cost about as much as a merge's gemm on a 2-core machine. (Bulk
     * copies into a Java array reduced by a branch-free {@link Math#max} loop measured 2× slower on JDK 17, which does
     * not vectorise that float reduction.)
     */
    static double maxAbsOrNaN(INDArray array) {
        INDArray c = Kernels.rowMajorContiguous(array) ? array : array.dup('c');
        int n = Math.toIntExact(c.length());
        double max = 0;
        if (c.dataType() == DataType.DOUBLE) {
            DoubleBuffer buf = Kernels.doubles(c);
            for (int i = 0; i < n; i++) {
                double v = Math.abs(buf.get(i));
                if (!(v <= Double.MAX_VALUE)) {
                    return Double.NaN;
                }
                max = Math.max(max, v);
            }
        } else {
            INDArray f = c.dataType() == DataType.FLOAT ? c : c.castTo(DataType.FLOAT);
            FloatBuffer buf = Kernels.floats(f);
            for (int i = 0; i < n; i++) {
                float v = Math.abs(buf.get(i));
                if (!(v <= Float.MAX_VALUE)) {
                    return Double.NaN;
                }
                max = Math.max(max, v);
            }
        }
        return max;
    }
}
