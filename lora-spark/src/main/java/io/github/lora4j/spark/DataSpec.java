package io.github.lora4j.spark;

import com.esotericsoftware.kryo.DefaultSerializer;
import com.esotericsoftware.kryo.serializers.JavaSerializer;
import io.github.lora4j.dl4j.LoraLayerConf;
import java.io.Serializable;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.conf.ComputationGraphConfiguration;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.graph.GraphVertex;
import org.deeplearning4j.nn.conf.graph.LayerVertex;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.misc.FrozenLayerWithBackprop;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * What the data of a network must look like: how many feature and label arrays, and, where the network fixes it,
 * their width ({@code nIn} of a dense first layer, {@code nOut} of a dense output layer). Checked on the workers,
 * element by element, before any step runs.
 *
 * @param container     "DataSet" or "MultiDataSet", for messages
 * @param featureWidths per input: the required {@code size(1)} of a rank-2 array, or -1 where the network does not
 *                      fix it (a first layer with a preprocessor, a convolution, ...)
 * @param featureWhat   per input: where the width comes from, for messages
 * @param labelWidths   per output: as {@code featureWidths}, from a dense output layer's {@code nOut}
 * @param labelWhat     per output: where the width comes from
 * @param type          the network's data type, into which every array is cast
 *
 * <p>Java-serialised under Kryo too: Kryo 4's field serialiser (Spark's) cannot build records.
 */
@DefaultSerializer(JavaSerializer.class)
record DataSpec(String container, long[] featureWidths, String[] featureWhat, long[] labelWidths, String[] labelWhat,
        DataType type) implements Serializable {

    static DataSpec of(MultiLayerNetwork net) {
        MultiLayerConfiguration c = net.getLayerWiseConfigurations();
        Layer first = unwrap(c.getConf(0).getLayer());
        Layer last = unwrap(c.getConf(c.getConfs().size() - 1).getLayer());
        boolean firstDense = c.getInputPreProcess(0) == null && denseLike(first);
        return new DataSpec("DataSet",
                new long[] {firstDense ? ((FeedForwardLayer) first).getNIn() : -1},
                new String[] {"nIn of layer " + describe(first, 0)},
                new long[] {denseOutput(last) ? ((FeedForwardLayer) last).getNOut() : -1},
                new String[] {"nOut of layer " + describe(last, c.getConfs().size() - 1)},
                c.getDataType());
    }

    static DataSpec of(ComputationGraph graph) {
        ComputationGraphConfiguration c = graph.getConfiguration();
        List<String> inputs = c.getNetworkInputs();
        long[] fw = new long[inputs.size()];
        String[] fwhat = new String[inputs.size()];
        for (int i = 0; i < inputs.size(); i++) {
            fw[i] = -1;
            fwhat[i] = "input '" + inputs.get(i) + "'";
            for (Map.Entry<String, List<String>> e : c.getVertexInputs().entrySet()) {
                GraphVertex v = c.getVertices().get(e.getKey());
                if (e.getValue().contains(inputs.get(i)) && v instanceof LayerVertex lv && lv.getPreProcessor() == null
                        && denseLike(unwrap(lv.getLayerConf().getLayer()))) {
                    fw[i] = ((FeedForwardLayer) unwrap(lv.getLayerConf().getLayer())).getNIn();
                    fwhat[i] = "nIn of layer '" + e.getKey() + "' reading input '" + inputs.get(i) + "'";
                    break;
                }
            }
        }
        List<String> outputs = c.getNetworkOutputs();
        long[] lw = new long[outputs.size()];
        String[] lwhat = new String[outputs.size()];
        for (int i = 0; i < outputs.size(); i++) {
            GraphVertex v = c.getVertices().get(outputs.get(i));
            Layer l = v instanceof LayerVertex lv ? unwrap(lv.getLayerConf().getLayer()) : null;
            lw[i] = l != null && denseOutput(l) ? ((FeedForwardLayer) l).getNOut() : -1;
            lwhat[i] = "nOut of output layer '" + outputs.get(i) + "'";
        }
        return new DataSpec("MultiDataSet", fw, fwhat, lw, lwhat, c.getDataType());
    }

    int numInputs() {
        return featureWidths.length;
    }

    int numOutputs() {
        return labelWidths.length;
    }

    /**
     * Checks the arrays of one element: their number, that each is present, the rows they share, and the widths the
     * network fixes.
     *
     * @param where    "partition p, element i", for messages
     * @param features the element's feature arrays
     * @param labels   the element's label arrays, or null for inference
     * @param fMasks   feature masks, or null
     * @param lMasks   label masks, or null
     * @return the element's number of rows
     * @throws IllegalArgumentException naming what was expected and what came
     */
    long check(String where, INDArray[] features, INDArray[] labels, INDArray[] fMasks, INDArray[] lMasks) {
        long rows = checkArrays(where, "features", features, featureWidths, featureWhat, -1);
        if (labels != null) {
            checkArrays(where, "labels", labels, labelWidths, labelWhat, rows);
        }
        checkMasks(where, "features mask", fMasks, numInputs(), rows);
        checkMasks(where, "labels mask", lMasks, numOutputs(), rows);
        return rows;
    }

    private long checkArrays(String where, String what, INDArray[] arrays, long[] widths, String[] whence, long rows) {
        if (arrays == null || arrays.length != widths.length) {
            throw new IllegalArgumentException(where + ": expected " + widths.length + " " + what + " array"
                    + (widths.length == 1 ? "" : "s") + " (one per network " + (what.equals("features") ? "input"
                    : "output") + "), got " + (arrays == null ? "none" : arrays.length));
        }
        for (int i = 0; i < arrays.length; i++) {
            INDArray a = arrays[i];
            String name = widths.length == 1 ? what : what + "[" + i + "]";
            if (a == null) {
                throw new IllegalArgumentException(where + ": " + name + " is null; expected an array of rows");
            }
            requireIntact(where, name, a);
            if (a.rank() < 1 || a.isEmpty()) {
                throw new IllegalArgumentException(where + ": expected " + name + " of at least one row, got shape "
                        + Arrays.toString(a.shape()));
            }
            if (!a.dataType().isFPType() && !a.dataType().isIntType()) {
                throw new IllegalArgumentException(where + ": expected numeric " + name + ", got data type "
                        + a.dataType());
            }
            if (widths[i] >= 0 && (a.rank() != 2 || a.size(1) != widths[i])) {
                throw new IllegalArgumentException(where + ": expected " + name + " of shape [rows, " + widths[i]
                        + "] (" + whence[i] + "), got " + Arrays.toString(a.shape()));
            }
            if (rows < 0) {
                rows = a.size(0);
            } else if (a.size(0) != rows) {
                throw new IllegalArgumentException(where + ": expected " + name + " to have " + rows
                        + " rows (as the features), got shape " + Arrays.toString(a.shape()));
            }
        }
        return rows;
    }

    /**
     * An array whose shape is gone arrived through a serialiser that cannot carry ND4J arrays: Kryo without
     * {@link LoraKryoRegistrator}.
     */
    static void requireIntact(String where, String name, INDArray a) {
        try {
            a.shape();
            a.data().length();
        } catch (NullPointerException e) {
            throw new IllegalArgumentException(where + ": " + name + " arrived without its shape or data: it was "
                    + "serialised by Kryo (spark.serializer), which cannot carry ND4J arrays by itself; expected "
                    + "spark.kryo.registrator=" + LoraKryoRegistrator.class.getName() + " (or Spark's default "
                    + "JavaSerializer)", e);
        }
    }

    private static void checkMasks(String where, String what, INDArray[] masks, int count, long rows) {
        if (masks == null) {
            return;
        }
        if (masks.length != count) {
            throw new IllegalArgumentException(where + ": expected " + count + " " + what + " arrays, got "
                    + masks.length);
        }
        for (INDArray m : masks) {
            if (m != null) {
                requireIntact(where, what, m);
            }
            if (m != null && (m.rank() < 1 || m.size(0) != rows)) {
                throw new IllegalArgumentException(where + ": expected a " + what + " of " + rows + " rows, got shape "
                        + Arrays.toString(m.shape()));
            }
        }
    }

    /** The layer inside DL4J's frozen wrapper. */
    private static Layer unwrap(Layer l) {
        return l instanceof FrozenLayerWithBackprop f ? unwrap(f.getUnderlying()) : l;
    }

    /** A layer that reads rank-2 input {@code [rows, nIn]}. */
    private static boolean denseLike(Layer l) {
        return l instanceof LoraLayerConf || l instanceof DenseLayer || l instanceof OutputLayer;
    }

    /** An output layer whose labels are {@code [rows, nOut]}. */
    private static boolean denseOutput(Layer l) {
        return l instanceof LoraLayerConf && l instanceof org.deeplearning4j.nn.conf.layers.BaseOutputLayer
                || l instanceof OutputLayer;
    }

    private static String describe(Layer l, int index) {
        return (l.getLayerName() == null ? "" : "'" + l.getLayerName() + "' ") + "(index " + index + ")";
    }
}
