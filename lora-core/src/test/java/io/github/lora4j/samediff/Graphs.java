package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.autodiff.samediff.internal.SameDiffOp;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;

/** The three kinds of graph the SameDiff tests adapt, and a snapshot of a graph's structure and arrays. */
final class Graphs {

    static final int IN = 10;
    static final int HIDDEN = 7;
    static final int OUT = 5;

    private Graphs() {
    }

    enum Kind { LINEAR, MMUL, FLATBUFFERS }

    /**
     * A two-layer regression net {@code fc1(tanh(fc0(x)))} with trainable weights and biases, loss "loss" (MSE
     * against placeholder "label"): LINEAR with {@code sd.nn().linear} (W {@code [in, out]}), MMUL with
     * {@code mmul(x, W, transposeB)} plus {@code add} (W {@code [out, in]}), FLATBUFFERS the MMUL graph saved
     * with {@code asFlatBuffers} and loaded with {@code fromFlatBuffers}.
     */
    static SameDiff build(Kind kind, DataType type, long seed) {
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", type, -1, IN);
        SDVariable label = sd.placeHolder("label", type, -1, OUT);
        SDVariable h;
        SDVariable y;
        if (kind == Kind.LINEAR) {
            SDVariable w0 = sd.var("fc0/weight", gaussian(type, seed, 0.4, IN, HIDDEN));
            SDVariable b0 = sd.var("fc0/bias", gaussian(type, seed + 1, 0.1, HIDDEN));
            SDVariable w1 = sd.var("fc1/weight", gaussian(type, seed + 2, 0.4, HIDDEN, OUT));
            SDVariable b1 = sd.var("fc1/bias", gaussian(type, seed + 3, 0.1, OUT));
            h = sd.math().tanh("h", sd.nn().linear("fc0", x, w0, b0));
            y = sd.nn().linear("fc1", h, w1, b1);
        } else {
            SDVariable w0 = sd.var("fc0/weight", gaussian(type, seed, 0.4, HIDDEN, IN));
            SDVariable b0 = sd.var("fc0/bias", gaussian(type, seed + 1, 0.1, 1, HIDDEN));
            SDVariable w1 = sd.var("fc1/weight", gaussian(type, seed + 2, 0.4, OUT, HIDDEN));
            SDVariable b1 = sd.var("fc1/bias", gaussian(type, seed + 3, 0.1, 1, OUT));
            h = sd.math().tanh("h", sd.mmul(x, w0, false, true, false).add("fc0", b0));
            y = sd.mmul(h, w1, false, true, false).add("fc1", b1);
        }
        sd.loss().meanSquaredError("loss", label, y, null);
        sd.setLossVariables("loss");
        sd.setTrainingConfig(TrainingConfig.builder().updater(new Adam(0.01))
                .dataSetFeatureMapping("x").dataSetLabelMapping("label").build());
        return kind == Kind.FLATBUFFERS ? roundTrip(sd) : sd;
    }

    /** {@code sd} written with {@code asFlatBuffers} (updater state included) and read back. */
    static SameDiff roundTrip(SameDiff sd) {
        try {
            return SameDiff.fromFlatBuffers(sd.asFlatBuffers(true));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Names of the weight of layer {@code i}: {@code "fc0/weight"}, ... */
    static String weight(int layer) {
        return "fc" + layer + "/weight";
    }

    /** Output {@code name} of the graph for input {@code x}. */
    static INDArray output(SameDiff sd, INDArray x, String name) {
        return sd.output(Map.of("x", x), name).get(name);
    }

    /** Fits {@code sd} {@code steps} times on (x, label) and returns the loss "loss" before and after. */
    static double[] lossBeforeAndAfterFit(SameDiff sd, INDArray x, INDArray label, int steps) {
        Map<String, INDArray> feed = Map.of("x", x, "label", label);
        double before = sd.output(feed, "loss").get("loss").getDouble(0);
        DataSet data = new DataSet(x, label);
        for (int i = 0; i < steps; i++) {
            sd.fit(data);
        }
        return new double[] {before, sd.output(feed, "loss").get("loss").getDouble(0)};
    }

    /** Everything about a graph a refused call must leave alone: variables with types, ops with edges, array bits. */
    record Snapshot(Map<String, VariableType> variables, Map<String, String> ops, Map<String, String> arrays,
                    List<String> loss) {
    }

    static Snapshot snapshot(SameDiff sd) {
        Map<String, VariableType> vars = new TreeMap<>();
        Map<String, String> arrays = new TreeMap<>();
        for (SDVariable v : sd.variables()) {
            vars.put(v.name(), v.getVariableType());
            if (v.getVariableType() == VariableType.VARIABLE || v.getVariableType() == VariableType.CONSTANT) {
                INDArray a = v.getArr();
                arrays.put(v.name(), a.dataType() + Arrays.toString(a.shape()) + Arrays.toString(bits(a)));
            }
        }
        Map<String, String> ops = new TreeMap<>();
        for (Map.Entry<String, SameDiffOp> e : sd.getOps().entrySet()) {
            ops.put(e.getKey(), e.getValue().getOp().opName() + e.getValue().getInputsToOp() + "->"
                    + e.getValue().getOutputsOfOp());
        }
        return new Snapshot(vars, ops, arrays, List.copyOf(sd.getLossVariables()));
    }
}
