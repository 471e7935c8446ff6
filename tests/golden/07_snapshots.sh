# Snapshots: incremental, changed blocks, volumes from snapshots, copies within and across regions, re-key.
A=$(ebsim kms create-key --description "key A" --query KeyMetadata.Arn --output text)
B=$(ebsim kms create-key --region us-west-2 --description "key B" --query KeyMetadata.Arn --output text)
VOL=$(ebsim ec2 create-volume --size-bytes 4194304 --encrypted --kms-key-id $A --query VolumeId --output text)
t "ebsim ec2 create-snapshot --volume-id $VOL --description empty --tag-specifications 'ResourceType=snapshot,Tags=[{Key=stage,Value=first}]' --query '[Description, State, Progress, Encrypted, VolumeSize, BlockCount, Tags[0].Value]' --output text"
S1=$(ebsim ec2 describe-snapshots --filters Name=description,Values=empty --query 'Snapshots[0].SnapshotId' --output text)
t "ebsim ec2 create-volume --snapshot-id $S1 --size-bytes 1048576"
t "ebsim ec2 create-volume --snapshot-id snap-0123456789abcdef0"
V2=$(ebsim ec2 create-volume --snapshot-id $S1 --query VolumeId --output text)
t "ebsim ec2 describe-volumes --volume-ids $V2 --query 'Volumes[0].[Encrypted, KmsKeyId, SnapshotId, SizeBytes]' --output text"
S2=$(ebsim ec2 create-snapshot --volume-id $VOL --query SnapshotId --output text)
t "ebsim ebs list-changed-blocks --first-snapshot-id $S1 --second-snapshot-id $S2 --query '[length(ChangedBlocks), BlockSize]' --output text"
t "ebsim ec2 copy-snapshot --source-region us-east-1 --source-snapshot-id $S1 --query 'length(SnapshotId)'"
t "ebsim ec2 copy-snapshot --source-region us-east-1 --source-snapshot-id $S1 --no-encrypted"
t "ebsim ec2 copy-snapshot --source-region us-east-1 --source-snapshot-id $S1 --kms-key-id $A"
t "ebsim --region us-west-2 ec2 copy-snapshot --source-region us-east-1 --source-snapshot-id $S1 --encrypted --kms-key-id $A"
C=$(ebsim --region us-west-2 ec2 copy-snapshot --source-region us-east-1 --source-snapshot-id $S1 --encrypted --kms-key-id $B --query SnapshotId --output text)
t "ebsim --region us-west-2 ec2 describe-snapshots --snapshot-ids $C --query 'Snapshots[0].[VolumeId, KmsKeyId, Description]' --output text"
t "ebsim ec2 rekey-volume --volume-id $VOL --kms-key-id $B"
C2=$(ebsim kms create-key --description "key C" --query KeyMetadata.Arn --output text)
t "ebsim ec2 rekey-volume --volume-id $VOL --kms-key-id $C2 --query '[VolumeId, KmsKeyId, State]' --output text"
t "ebsim ec2 rekey-volume --volume-id $V2 --kms-key-id $C2 --query KmsKeyId --output text"
t "ebsim ec2 delete-snapshot --snapshot-id $S1"
t "ebsim ec2 describe-snapshots --query 'length(Snapshots)'"
t "ebsim ec2 delete-snapshot --snapshot-id $S1"
