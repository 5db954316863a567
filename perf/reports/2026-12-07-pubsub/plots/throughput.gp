set terminal pngcairo size 2400,682 font ',10'
set output '/tmp/report-pubsub/throughput.png'
set title 'messages per second, millions (log scale; higher is better)'
set ylabel 'M msg/s'
set datafile missing '-'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -40 left nomirror
set grid ytics
set key top left
set bmargin 27
set rmargin 12
set logscale y
plot '/tmp/report-pubsub/plots/throughput.dat' using 2:xtic(1) title 'split', \
     '/tmp/report-pubsub/plots/throughput.dat' using 3:xtic(1) title 'shared'
