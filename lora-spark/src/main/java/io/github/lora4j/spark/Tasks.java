package io.github.lora4j.spark;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.api.java.function.Function2;
import org.apache.spark.broadcast.Broadcast;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The code that runs on the executors. Each function is a small serialisable class holding only broadcasts and
 * plain values, so a task ships a few hundred bytes besides the broadcast blocks.
 */
final class Tasks {

    private Tasks() {
    }

    /** Cuts a partition into batches of {@code batchSize} rows, checking every element; one output per partition. */
    static final class Prepare implements Function2<Integer, Iterator<Object>, Iterator<PartitionBatches>> {
        private static final long serialVersionUID = 1L;
        private final DataSpec spec;
        private final int batchSize;

        Prepare(DataSpec spec, int batchSize) {
            this.spec = spec;
            this.batchSize = batchSize;
        }

        @Override
        public Iterator<PartitionBatches> call(Integer partition, Iterator<Object> elements) {
            Batcher batcher = new Batcher(spec, batchSize, partition);
            while (elements.hasNext()) {
                batcher.add(elements.next());
            }
            return Collections.singletonList(batcher.finish()).iterator();
        }
    }

    /**
     * One step on one partition: the gradient of A and B over the partition's batch {@code step}, with the pooled
     * network of this executor, set to the broadcast adapter and counters.
     */
    static final class Gradient implements FlatMapFunction<Iterator<PartitionBatches>, StepResult> {
        private static final long serialVersionUID = 1L;
        private final Broadcast<NetworkPayload> network;
        private final Broadcast<StepInput> input;

        Gradient(Broadcast<NetworkPayload> network, Broadcast<StepInput> input) {
            this.network = network;
            this.input = input;
        }

        @Override
        public Iterator<StepResult> call(Iterator<PartitionBatches> partition) {
            StepInput in = input.value();
            if (!partition.hasNext()) {
                return Collections.emptyIterator();
            }
            List<Batch> batches = partition.next().batches();
            if (in.step() >= batches.size()) {
                return Collections.emptyIterator(); // this partition has run out of rows
            }
            Batch batch = batches.get(in.step());
            NetworkPayload payload = network.value();
            WorkerCache.Entry e = WorkerCache.borrow(payload, true);
            try {
                long t0 = System.nanoTime();
                e.layout().writeParams(in.adapter());
                e.net().setCounts(in.iteration(), in.epoch());
                e.net().setData(Batch.toNd4j(batch.features()), Batch.toNd4j(batch.labels()),
                        Batch.toNd4j(batch.featureMasks()), Batch.toNd4j(batch.labelMasks()));
                // score = Σ loss / n + reg (n only with miniBatch): take the loss sum back out of it
                double score = e.net().computeGradientAndScore();
                double lossSum = (score - e.net().regularizationScore()) * (e.net().miniBatch() ? batch.rows() : 1);
                FlatVector gradient = e.layout().readGradients();
                e.net().clear();
                return Collections.singletonList(new StepResult(batch.rows(), lossSum, gradient,
                        System.nanoTime() - t0)).iterator();
            } finally {
                WorkerCache.release(payload.id(), e);
            }
        }
    }

    /**
     * Inference on a partition: the outputs of the broadcast (merged) network, element by element, in order. One
     * network of the executor's pool serves the whole partition.
     */
    abstract static class Inference<T> implements FlatMapFunction<Iterator<T>, T> {
        private static final long serialVersionUID = 1L;
        private final Broadcast<NetworkPayload> network;
        private final DataSpec spec;

        Inference(Broadcast<NetworkPayload> network, DataSpec spec) {
            this.network = network;
            this.spec = spec;
        }

        abstract INDArray[] inputs(T element);

        abstract T result(INDArray[] outputs);

        @Override
        public Iterator<T> call(Iterator<T> elements) {
            if (!elements.hasNext()) {
                return Collections.emptyIterator();
            }
            NetworkPayload payload = network.value();
            WorkerCache.Entry e = WorkerCache.borrow(payload, false);
            List<T> out = new ArrayList<>();
            try {
                int i = 0;
                while (elements.hasNext()) {
                    INDArray[] x = inputs(elements.next());
                    spec.check("partition " + TaskContext.getPartitionId() + ", element " + i++, x, null, null, null);
                    INDArray[] cast = new INDArray[x.length];
                    for (int k = 0; k < x.length; k++) {
                        cast[k] = x[k].castTo(spec.type());
                    }
                    out.add(result(e.net().output(cast)));
                }
                e.net().clear();
            } finally {
                WorkerCache.release(payload.id(), e);
            }
            return out.iterator();
        }
    }

    /** {@link Inference} of a {@code MultiLayerNetwork}: one array in, one out. */
    static final class Output extends Inference<INDArray> {
        private static final long serialVersionUID = 1L;

        Output(Broadcast<NetworkPayload> network, DataSpec spec) {
            super(network, spec);
        }

        @Override
        INDArray[] inputs(INDArray element) {
            return new INDArray[] {element};
        }

        @Override
        INDArray result(INDArray[] outputs) {
            return outputs[0];
        }
    }

    /** {@link Inference} of a {@code ComputationGraph}: one array per input in, one per output out. */
    static final class GraphOutput extends Inference<INDArray[]> {
        private static final long serialVersionUID = 1L;

        GraphOutput(Broadcast<NetworkPayload> network, DataSpec spec) {
            super(network, spec);
        }

        @Override
        INDArray[] inputs(INDArray[] element) {
            return element;
        }

        @Override
        INDArray[] result(INDArray[] outputs) {
            return outputs;
        }
    }
}
