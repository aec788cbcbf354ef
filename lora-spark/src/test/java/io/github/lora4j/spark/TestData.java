package io.github.lora4j.spark;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.dl4j.LoraDl4j;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.deeplearning4j.nn.conf.ComputationGraphConfiguration;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.graph.MergeVertex;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.INDArrayIndex;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** Small LoRA networks and partitioned data for the tests. */
final class TestData {

    static final int IN = 6;
    static final int HIDDEN = 10;
    static final int CLASSES = 3;
    static final LoraConfig LORA = LoraConfig.builder().rank(2).alpha(4).seed(11).build();

    private TestData() {
    }

    /** Dense(IN→HIDDEN, tanh) "fc1" → Dense(HIDDEN→HIDDEN, sigmoid) "fc2" → Output(HIDDEN→CLASSES) "out". */
    static NeuralNetConfiguration.ListBuilder mlnConf(DataType type, IUpdater updater) {
        return new NeuralNetConfiguration.Builder()
                .seed(7).dataType(type).updater(updater).weightInit(WeightInit.XAVIER)
                .list()
                .layer(new DenseLayer.Builder().name("fc1").nIn(IN).nOut(HIDDEN).activation(Activation.TANH).build())
                .layer(new DenseLayer.Builder().name("fc2").nIn(HIDDEN).nOut(HIDDEN).activation(Activation.SIGMOID)
                        .build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).name("out").nIn(HIDDEN)
                        .nOut(CLASSES).activation(Activation.SOFTMAX).build());
    }

    /** LoRA on "fc1" and "out"; "fc2" stays frozen. */
    static MultiLayerNetwork loraMln(DataType type, IUpdater updater) {
        return lora(mlnConf(type, updater).build());
    }

    static MultiLayerNetwork lora(MultiLayerConfiguration conf) {
        MultiLayerNetwork base = new MultiLayerNetwork(conf);
        base.init();
        return LoraDl4j.apply(base, LORA, "fc1", "out");
    }

    /** Adds L2 (on the weights, so on A and B) and per-layer gradient clipping to {@link #mlnConf}'s settings. */
    static MultiLayerNetwork loraMlnRegularised(DataType type, IUpdater updater) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder()
                .seed(7).dataType(type).updater(updater).weightInit(WeightInit.XAVIER).l2(0.05)
                .gradientNormalization(GradientNormalization.ClipL2PerLayer).gradientNormalizationThreshold(0.05)
                .list()
                .layer(new DenseLayer.Builder().name("fc1").nIn(IN).nOut(HIDDEN).activation(Activation.TANH).build())
                .layer(new DenseLayer.Builder().name("fc2").nIn(HIDDEN).nOut(HIDDEN).activation(Activation.SIGMOID)
                        .build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).name("out").nIn(HIDDEN)
                        .nOut(CLASSES).activation(Activation.SOFTMAX).build())
                .build();
        return lora(conf);
    }

    /**
     * Two inputs: "a" [IN] → "fc1" (dense, tanh); "b" [4] → "side" (dense, tanh); merged → "out" (softmax) and a
     * second output "aux" (MSE, 2 wide) on "fc1". LoRA on "fc1", "out" and "aux".
     */
    static ComputationGraph loraGraph(DataType type, IUpdater updater) {
        ComputationGraphConfiguration conf = new NeuralNetConfiguration.Builder()
                .seed(9).dataType(type).updater(updater).weightInit(WeightInit.XAVIER)
                .graphBuilder()
                .addInputs("a", "b")
                .addLayer("fc1", new DenseLayer.Builder().nIn(IN).nOut(HIDDEN).activation(Activation.TANH).build(), "a")
                .addLayer("side", new DenseLayer.Builder().nIn(4).nOut(4).activation(Activation.TANH).build(), "b")
                .addVertex("merge", new MergeVertex(), "fc1", "side")
                .addLayer("out", new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(HIDDEN + 4)
                        .nOut(CLASSES).activation(Activation.SOFTMAX).build(), "merge")
                .addLayer("aux", new OutputLayer.Builder(LossFunctions.LossFunction.MSE).nIn(HIDDEN).nOut(2)
                        .activation(Activation.IDENTITY).build(), "fc1")
                .setOutputs("out", "aux")
                .build();
        ComputationGraph g = new ComputationGraph(conf);
        g.init();
        return LoraDl4j.apply(g, LORA, "fc1", "out", "aux");
    }

    /** {@code rows} rows of a classification task (labels from a fixed random teacher), from {@code seed}. */
    static DataSet rows(DataType type, long seed, int rows) {
        INDArray teacher = gaussian(1234, IN, CLASSES);
        INDArray x = gaussian(seed, rows, IN);
        INDArray scores = x.mmul(teacher);
        INDArray labels = Nd4j.zeros(DataType.DOUBLE, rows, CLASSES);
        for (int i = 0; i < rows; i++) {
            labels.putScalar(i, scores.getRow(i).argMax().getInt(0), 1.0);
        }
        return new DataSet(x.castTo(type), labels.castTo(type));
    }

    /** Rows for {@link #loraGraph}: inputs [rows, IN] and [rows, 4], labels [rows, CLASSES] and [rows, 2]. */
    static MultiDataSet graphRows(DataType type, long seed, int rows) {
        DataSet d = rows(type, seed, rows);
        INDArray b = gaussian(seed + 1, rows, 4).castTo(type);
        INDArray aux = gaussian(seed + 2, rows, 2).castTo(type);
        return new org.nd4j.linalg.dataset.MultiDataSet(new INDArray[] {d.getFeatures(), b},
                new INDArray[] {d.getLabels(), aux});
    }

    /**
     * Partitions of {@link #rows}: partition p holds DataSets of the given row counts ({@code sizes[p]}), each from
     * its own seed.
     */
    static List<List<DataSet>> partitions(DataType type, int[][] sizes) {
        List<List<DataSet>> parts = new ArrayList<>();
        long seed = 100;
        for (int[] p : sizes) {
            List<DataSet> part = new ArrayList<>();
            for (int n : p) {
                part.add(rows(type, seed++, n));
            }
            parts.add(part);
        }
        return parts;
    }

    static List<List<MultiDataSet>> graphPartitions(DataType type, int[][] sizes) {
        List<List<MultiDataSet>> parts = new ArrayList<>();
        long seed = 500;
        for (int[] p : sizes) {
            List<MultiDataSet> part = new ArrayList<>();
            for (int n : p) {
                part.add(graphRows(type, seed, n));
                seed += 3;
            }
            parts.add(part);
        }
        return parts;
    }

    /** An RDD whose partition p holds exactly {@code parts.get(p)}, in order. */
    static <T> JavaRDD<T> rdd(JavaSparkContext sc, List<List<T>> parts) {
        return sc.parallelize(parts, parts.size()).flatMap(List::iterator);
    }

    /**
     * The global batches of the documented semantics, built independently of the implementation: step t
     * concatenates, in partition order, each partition's rows [t·b, (t+1)·b).
     */
    static List<DataSet> globalBatches(List<List<DataSet>> parts, int b) {
        List<INDArray[]> f = new ArrayList<>();
        List<INDArray[]> l = new ArrayList<>();
        for (List<DataSet> p : parts) {
            if (p.isEmpty()) {
                continue;  // an empty partition contributes nothing
            }
            f.add(new INDArray[] {concat(p.stream().map(DataSet::getFeatures).toList())});
            l.add(new INDArray[] {concat(p.stream().map(DataSet::getLabels).toList())});
        }
        List<DataSet> out = new ArrayList<>();
        for (INDArray[][] step : steps(f, l, b)) {
            out.add(new DataSet(step[0][0], step[1][0]));
        }
        return out;
    }

    static List<MultiDataSet> globalGraphBatches(List<List<MultiDataSet>> parts, int b) {
        List<INDArray[]> f = new ArrayList<>();
        List<INDArray[]> l = new ArrayList<>();
        for (List<MultiDataSet> p : parts) {
            if (p.isEmpty()) {
                continue;
            }
            int nf = p.get(0).getFeatures().length;
            int nl = p.get(0).getLabels().length;
            INDArray[] pf = new INDArray[nf];
            INDArray[] pl = new INDArray[nl];
            for (int i = 0; i < nf; i++) {
                int k = i;
                pf[i] = concat(p.stream().map(m -> m.getFeatures(k)).toList());
            }
            for (int i = 0; i < nl; i++) {
                int k = i;
                pl[i] = concat(p.stream().map(m -> m.getLabels(k)).toList());
            }
            f.add(pf);
            l.add(pl);
        }
        List<MultiDataSet> out = new ArrayList<>();
        for (INDArray[][] step : steps(f, l, b)) {
            out.add(new org.nd4j.linalg.dataset.MultiDataSet(step[0], step[1]));
        }
        return out;
    }

    /** Per step, {features, labels}: every partition's rows [t·b, (t+1)·b), concatenated in partition order. */
    private static List<INDArray[][]> steps(List<INDArray[]> f, List<INDArray[]> l, int b) {
        long maxRows = f.stream().mapToLong(a -> a[0].size(0)).max().orElse(0);
        List<INDArray[][]> out = new ArrayList<>();
        for (long start = 0; start < maxRows; start += b) {
            INDArray[] sf = new INDArray[f.get(0).length];
            INDArray[] sl = new INDArray[l.get(0).length];
            for (int i = 0; i < sf.length; i++) {
                sf[i] = slice(f, i, start, b);
            }
            for (int i = 0; i < sl.length; i++) {
                sl[i] = slice(l, i, start, b);
            }
            out.add(new INDArray[][] {sf, sl});
        }
        return out;
    }

    private static INDArray slice(List<INDArray[]> parts, int slot, long start, int b) {
        List<INDArray> pieces = new ArrayList<>();
        for (INDArray[] p : parts) {
            INDArray a = p[slot];
            if (start < a.size(0)) {
                long end = Math.min(a.size(0), start + b);
                INDArrayIndex[] idx = new INDArrayIndex[a.rank()];
                idx[0] = NDArrayIndex.interval(start, end);
                for (int d = 1; d < idx.length; d++) {
                    idx[d] = NDArrayIndex.all();
                }
                pieces.add(a.get(idx).dup());
            }
        }
        return concat(pieces);
    }

    private static INDArray concat(List<INDArray> arrays) {
        return arrays.size() == 1 ? arrays.get(0).dup() : Nd4j.concat(0, arrays.toArray(new INDArray[0]));
    }

    /** A {@code [rows, cols]} DOUBLE matrix of standard normals from {@code seed}. */
    static INDArray gaussian(long seed, int rows, int cols) {
        Random r = new Random(seed);
        double[][] v = new double[rows][cols];
        for (double[] row : v) {
            for (int j = 0; j < cols; j++) {
                row[j] = r.nextGaussian();
            }
        }
        return Nd4j.create(v);
    }
}
